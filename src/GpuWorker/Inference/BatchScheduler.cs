using LLama.Batched;
using LLama.Native;
using Microsoft.Extensions.Options;

namespace LlmServing.GpuWorker.Inference;

/// <summary>
/// Continuous batching over one llama.cpp <see cref="BatchedExecutor"/>. Each turn of the loop is admit, infer,
/// sample (vLLM's schedule, execute, update): requests from the <see cref="AdmissionQueue"/> take free slots while the
/// KV budget allows (<see cref="AdmissionPolicy"/>), one <c>llama_decode</c> runs every active sequence (a new
/// prompt's prefill shares the step with the running decodes), and every sequence that needs a token samples one
/// and ends on EOS, a stop string, <c>max_tokens</c>, its time limit or a cancel. A finished sequence frees its slot
/// and KV cells at once. The executor is not thread-safe: this loop is its only user.
/// </summary>
public sealed class BatchScheduler(
    LlamaModel model,
    IOptions<InferenceOptions> options,
    IEnumerable<IDecodeResultFilter> decodeFilters,
    IEnumerable<IDecodeStepHook> stepHooks,
    IEnumerable<IProgressSink> progressSinks,
    ILogger<BatchScheduler> logger) : BackgroundService, IGenerator, ISchedulerState
{
    private readonly AdmissionQueue _queue = new();
    private readonly InferenceOptions _options = options.Value;
    private readonly IDecodeResultFilter[] _decodeFilters = [.. decodeFilters];
    private readonly IDecodeStepHook[] _stepHooks = [.. stepHooks];
    private readonly IProgressSink[] _progressSinks = [.. progressSinks];
    private long _lastProgress;
    private IReadOnlyCollection<int>? _grammarBans;
    private PrefixCache? _cache;

    public SchedulerCounters Counters { get; } = new();

    public IReadOnlyCollection<Guid> JobIds => _queue.JobIds;

    /// <summary>Now while the model loads (a worker is not idle before it can work); then when it last had work.</summary>
    public DateTimeOffset LastBusyAt => Volatile.Read(ref _ready) ? _queue.LastBusyAt : DateTimeOffset.UtcNow;

    private bool _ready;

    public Task<GenerationOutcome> GenerateAsync(GenerationRequest request, CancellationToken ct) => _queue.Enqueue(request, ct);

    /// <summary>
    /// A user cancelled the job: a waiting request ends before it starts, a running sequence is dropped at the next
    /// step; either way the outcome has finish reason <c>cancelled</c> and the text generated so far.
    /// </summary>
    public bool RequestCancel(Guid jobId) => _queue.RequestCancel(jobId);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await model.Loaded.WaitAsync(stoppingToken);
        _queue.Touch(); // the idle clock starts when the worker can run work
        Volatile.Write(ref _ready, true);
        await Task.Yield();
        var renderer = new PromptRenderer(model.Weights);
        _cache = _options.MaxCachedPrefixes > 0 ? new PrefixCache(_options.MaxCachedPrefixes, _options.MinPrefixTokens) : null;
        var executor = new BatchedExecutor(model.Weights, model.Parameters);
        var active = new List<ActiveSequence>();
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                Admit(executor, renderer, active);
                if (active.Count == 0)
                {
                    Counters.Idle();
                    await _queue.WaitAsync(stoppingToken);
                    continue;
                }

                if (!await StepAllowedAsync(active, stoppingToken))
                {
                    continue;
                }

                var result = await InferAsync(executor, stoppingToken);
                if (result != DecodeResult.Ok)
                {
                    executor = Rebuild(executor, active, result);
                    continue;
                }

                Counters.Step(active.Count);
                Sample(executor.Model.Vocab, active);
                ReportProgress(active);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host stopping: what is still running is returned to the broker by its consumer.
        }
        finally
        {
            _queue.Close(stoppingToken);
            foreach (var s in active)
            {
                s.Dispose();
                s.Pending.Completion.TrySetCanceled(stoppingToken);
            }

            _cache?.Clear();
            Counters.Idle();
            executor.Dispose();
        }
    }

    private void Admit(BatchedExecutor executor, PromptRenderer renderer, List<ActiveSequence> active)
    {
        if (_options.Scheduling == SchedulingMode.Static && active.Count > 0)
        {
            return; // static batches: nothing joins until the whole batch has finished
        }

        while (active.Sum(a => a.SlotsHeld) < _options.Slots && _queue.TryPeek(out var pending))
        {
            if (pending == PendingRequest.Wake || pending.IsAbandoned)
            {
                _queue.Dequeue(pending);
                continue;
            }

            if (pending.CancelRequested)
            {
                _queue.Dequeue(pending);
                pending.Complete(new GenerationOutcome("", "cancelled", pending.Tokens?.Length ?? 0, 0));
                continue;
            }

            try
            {
                pending.Tokens ??= renderer.Render(pending.Request, executor.Context);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // One request that breaks the engine must not stop the loop that serves every other request.
                _queue.Dequeue(pending);
                pending.Fail(e);
                continue;
            }

            if (SamplerFactory.Check(pending.Request.Parameters, executor.Model.Vocab.Count) is { } invalid)
            {
                _queue.Dequeue(pending);
                pending.Complete(GenerationOutcome.Failed(invalid, pending.Tokens.Length));
                continue;
            }

            var choices = pending.Request.Parameters.N;
            if (choices > _options.Slots)
            {
                _queue.Dequeue(pending);
                pending.Complete(GenerationOutcome.Failed($"n = {choices} choices need as many sequence slots; this worker has {_options.Slots}.", pending.Tokens.Length));
                continue;
            }

            if (active.Sum(a => a.SlotsHeld) + choices > _options.Slots)
            {
                break; // its choices wait for enough free slots
            }

            // Every choice can grow to max_tokens; the prompt is held once.
            var maxTokens = pending.Request.Parameters.MaxTokens * choices;
            var hit = _cache?.Find(pending.Tokens) ?? (null, 0);
            if (_cache is not null && active.Any(a => a.Conversation.RequiresInference && !a.Offered
                    && PrefixCache.CommonPrefix(a.Pending.Tokens, pending.Tokens) >= Math.Max(_cache.MinTokens, hit.Length + _cache.MinTokens)))
            {
                break; // a prompt sharing a longer prefix is being prefilled: start from it after this step
            }

            var decision = AdmissionPolicy.Decide(pending.Tokens.Length, maxTokens, Reserved(active), active.Count, _options.ContextSize);
            if (decision != Admission.Reject)
            {
                (decision, hit) = FitWithCache(active, pending.Tokens.Length, maxTokens, hit);
            }

            if (decision == Admission.Wait)
            {
                break; // waits for KV cells to be freed by a finishing sequence
            }

            _queue.Dequeue(pending);
            if (decision == Admission.Reject)
            {
                pending.Complete(GenerationOutcome.Failed(
                    $"The prompt ({pending.Tokens.Length} tokens) plus max_tokens ({maxTokens}{(choices > 1 ? $" for {choices} choices" : "")}) " +
                    $"does not fit the worker's context of {_options.ContextSize} tokens.", pending.Tokens.Length));
                continue;
            }

            var need = pending.Tokens.Length + maxTokens;
            var sequence = ActiveSequence.Start(executor, pending, need, _cache, hit, GrammarBans(pending.Request.Parameters));
            active.Add(sequence);
            if (hit.Entry is not null)
            {
                Counters.PrefixHit(hit.Length);
            }

            Counters.Reserved(Reserved(active));
        }
    }

    private async ValueTask<bool> StepAllowedAsync(List<ActiveSequence> active, CancellationToken ct)
    {
        var allowed = true;
        foreach (var hook in _stepHooks)
        {
            allowed &= await hook.BeforeStepAsync(active, ct);
        }

        return allowed;
    }

    private async Task<DecodeResult> InferAsync(BatchedExecutor executor, CancellationToken ct)
    {
        var result = await executor.Infer(ct);
        foreach (var filter in _decodeFilters)
        {
            result = filter.Filter(result);
        }

        return result;
    }

    private void Sample(LLama.Native.SafeLlamaModelHandle.Vocabulary vocab, List<ActiveSequence> active)
    {
        // A request for several choices: once its prompt is prefilled, fork it into the others (one prefill for all).
        for (var i = active.Count - 1; i >= 0; i--)
        {
            var s = active[i];
            if (s.ChoiceIndex == 0 && s.Pending.Request.Parameters.N > 1 && !s.Pending.Forked && s.Conversation.RequiresSampling
                && !s.Pending.IsAbandoned && s.EndBeforeSampling() is null)
            {
                if (!s.Offered)
                {
                    Offer(s);
                }

                active.AddRange(s.ForkChoices(GrammarBans(s.Pending.Request.Parameters)));
            }
        }

        for (var i = active.Count - 1; i >= 0; i--)
        {
            var s = active[i];
            if (s.Conversation.RequiresInference)
            {
                // Tokens of it are still queued in the executor (a prompt longer than one decode batch): disposing it
                // now would free its sequence id with a stale token queued. It ends, if it must, after they are decoded.
                continue;
            }

            if (s.Pending.IsAbandoned)
            {
                // Cancelled by its consumer: drop the sequence and free its slot now.
                s.Dispose();
                active.RemoveAt(i);
                continue;
            }

            if (s.EndBeforeSampling() is { } early)
            {
                Finish(active, i, early);
                continue;
            }

            if (!s.Conversation.RequiresSampling)
            {
                continue; // still in prefill
            }

            if (!s.Offered)
            {
                Offer(s);
            }

            // The model's distribution, copied before the sampler chain reads it (only when asked: a copy per token).
            var logits = s.Pending.Request.Parameters.Logprobs ? s.Conversation.Sample(0).ToArray() : null;
            LLama.Native.LLamaToken token;
            try
            {
                token = s.Conversation.Sample(s.Sampler);
            }
            catch (SamplingInterruptedException)
            {
                // Cancelled or out of time while its grammar was checking the vocabulary: it ends now, not after the
                // whole pass. The sampler stays unused (nothing was accepted), and the sequence is disposed.
                if (s.Pending.IsAbandoned)
                {
                    s.Dispose();
                    active.RemoveAt(i);
                }
                else
                {
                    Finish(active, i, s.EndBeforeSampling() ?? "cancelled");
                }

                continue;
            }
            if (token.IsEndOfGeneration(vocab) && !s.Pending.Request.Parameters.IgnoreEos)
            {
                Finish(active, i, "stop");
                continue;
            }

            if (!s.Pending.Request.IsWarmup)
            {
                Counters.Token();
            }
            if (logits is not null)
            {
                s.RecordLogprobs(logits, token, model.Weights.NativeHandle);
            }

            if (s.Accept(token) is { } reason)
            {
                Finish(active, i, reason);
            }
            else
            {
                s.Conversation.Prompt(token);
            }
        }
    }

    /// <summary>
    /// Every <see cref="InferenceOptions.ProgressInterval"/>, the streamable text of each running interactive job that
    /// grew since its last report goes to the progress sinks (first choice only; batch lines never).
    /// </summary>
    private void ReportProgress(List<ActiveSequence> active)
    {
        if (_progressSinks.Length == 0 || _options.ProgressInterval <= TimeSpan.Zero
            || System.Diagnostics.Stopwatch.GetElapsedTime(_lastProgress) < _options.ProgressInterval)
        {
            return;
        }

        _lastProgress = System.Diagnostics.Stopwatch.GetTimestamp();
        List<JobProgress>? progress = null;
        foreach (var s in active)
        {
            if (!s.Pending.Request.IsBatch && s.ChoiceIndex == 0 && s.Generated > s.ReportedTokens)
            {
                s.ReportedTokens = s.Generated;
                (progress ??= []).Add(new JobProgress(s.Pending.Request.JobId, s.StreamableText(), s.Generated));
            }
        }

        if (progress is not null)
        {
            foreach (var sink in _progressSinks)
            {
                sink.Report(progress);
            }
        }
    }

    /// <summary>
    /// Admission against the KV budget with cached prefixes: cells shared with <paramref name="hit"/> are counted there;
    /// unshared prefixes are evicted (least recently used first) while the request does not fit and evicting could
    /// make it fit, even with nothing running. With nothing running and still no room, the hit is given up and the
    /// cache emptied, so an idle worker never waits on its own cache.
    /// </summary>
    private (Admission Decision, (CachedPrefix? Entry, int Length) Hit) FitWithCache(
        List<ActiveSequence> active, int promptTokens, int maxTokens, (CachedPrefix? Entry, int Length) hit)
    {
        if (_cache is null)
        {
            return (AdmissionPolicy.Decide(promptTokens, maxTokens, Reserved(active), active.Count, _options.ContextSize), hit);
        }

        var own = promptTokens - hit.Length + maxTokens;
        if (hit.Entry is { } held)
        {
            held.Dependents++; // not a candidate for eviction while deciding
        }

        while (Reserved(active) + own > _options.ContextSize && EvictionCouldHelp(active, own) && _cache.EvictOne())
        {
        }

        if (hit.Entry is { } released)
        {
            released.Dependents--;
        }

        if (Reserved(active) + own <= _options.ContextSize)
        {
            return (Admission.Admit, hit);
        }

        if (active.Count > 0)
        {
            return (Admission.Wait, hit);
        }

        while (_cache.EvictOne())
        {
        }

        return (AdmissionPolicy.Decide(promptTokens, maxTokens, Reserved(active), 0, _options.ContextSize), (null, 0));
    }

    /// <summary>
    /// The tokens banned under a grammar (<see cref="SamplerFactory.InvalidUtf8Starts"/>): a pass over the whole
    /// vocabulary, made on the first structured request rather than at start-up (cold start counts).
    /// </summary>
    private IReadOnlyCollection<int> GrammarBans(Contracts.GenerationParameters p) =>
        p.Grammar is null ? [] : _grammarBans ??= SamplerFactory.InvalidUtf8Starts(model.Weights.NativeHandle, model.Weights.Vocab.Count);

    /// <summary>Whether evicting every unshared cached prefix would make room for <paramref name="own"/> more cells.</summary>
    private bool EvictionCouldHelp(List<ActiveSequence> active, int own) =>
        _cache is not null && active.Sum(s => s.Reserved) + _cache.SharedCells + own <= _options.ContextSize;

    /// <summary>KV cells spoken for: every active sequence's own reservation plus the cached prefixes (shared cells once).</summary>
    private int Reserved(List<ActiveSequence> active) => active.Sum(s => s.Reserved) + (_cache?.Cells ?? 0);

    /// <summary>
    /// Right after its prefill (before its first sample, so that the copy holds the prompt only), a prompt with at least
    /// <see cref="InferenceOptions.MinPrefixTokens"/> tokens the cache did not already give it becomes a cached prefix.
    /// </summary>
    private void Offer(ActiveSequence s)
    {
        s.Offered = true;
        var tokens = s.Pending.Tokens!;
        if (_cache is null || tokens.Length - s.CachedTokens < _cache.MinTokens)
        {
            return;
        }

        if (_cache.Add(s.Conversation, tokens) is { } entry)
        {
            s.Share(entry, tokens.Length);
        }
    }

    private void Finish(List<ActiveSequence> active, int index, string reason)
    {
        var s = active[index];
        if (s.OwnsPrompt && s.Pending.Request.Parameters.N > 1
            && active.Where((a, i) => i != index && a.Pending == s.Pending).FirstOrDefault() is { } heir)
        {
            s.HandPromptTo(heir);
        }

        s.Dispose();
        active.RemoveAt(index);
        if (!s.Pending.Request.IsWarmup)
        {
            Counters.Completed();
        }
        var n = s.Pending.Request.Parameters.N;
        if (n <= 1)
        {
            s.Pending.Complete(s.Outcome(reason));
            return;
        }

        var choices = s.Pending.Choices ??= new GenerationChoice?[n];
        choices[s.ChoiceIndex] = s.Choice(reason);
        if (!s.Pending.Forked)
        {
            // Ended before its prefill was forked (cancelled, time limit): the other choices end the same way, empty.
            for (var k = 0; k < n; k++)
            {
                choices[k] ??= new GenerationChoice(k, "", reason, 0, s.Pending.Request.Parameters.Logprobs ? [] : null);
            }
        }

        if (choices.All(c => c is not null))
        {
            var all = choices.Select(c => c!).ToList();
            s.Pending.Complete(new GenerationOutcome(all[0].Text, all[0].FinishReason, s.Pending.Tokens!.Length, all.Sum(c => c.CompletionTokens))
            {
                CachedTokens = s.Pending.CachedTokens,
                Logprobs = all[0].Logprobs,
                Choices = all,
                AdmittedAt = s.AdmittedAt,
                FirstTokenAt = s.FirstTokenAt,
            });
        }
    }

    /// <summary>
    /// After a failed decode the failed batch stays queued inside the executor, so it cannot be reused: free every
    /// sequence, build a new executor and run the affected requests again from their prompts.
    /// </summary>
    private BatchedExecutor Rebuild(BatchedExecutor executor, List<ActiveSequence> active, DecodeResult result)
    {
        Counters.DecodeFailed();
        logger.LogWarning("llama_decode failed ({Result}) with {Count} active sequences; rebuilding the executor", result, active.Count);
        var requests = new HashSet<PendingRequest>();
        for (var i = active.Count - 1; i >= 0; i--)
        {
            var s = active[i];
            s.Dispose();
            if (!requests.Add(s.Pending))
            {
                continue; // another choice of the same request
            }

            s.Pending.Forked = false;
            s.Pending.Choices = null;
            if (++s.Pending.DecodeFailures > _options.MaxDecodeRetries)
            {
                s.Pending.Complete(GenerationOutcome.Failed($"llama_decode failed ({result}) {s.Pending.DecodeFailures} times.", s.Pending.Tokens?.Length ?? 0));
            }
            else
            {
                _queue.Retry(s.Pending);
            }
        }

        active.Clear();
        _cache?.Clear();
        executor.Dispose();
        return new BatchedExecutor(model.Weights, model.Parameters);
    }
}
