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
    private KvBudget _budget = null!;

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
        _budget = new KvBudget(_options.ContextSize, _cache);
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
            if (!Screen(pending, executor, renderer))
            {
                continue; // it was taken off the queue (and answered, when it needed an answer)
            }

            var choices = pending.Request.Parameters.N;
            if (active.Sum(a => a.SlotsHeld) + choices > _options.Slots)
            {
                break; // its choices wait for enough free slots
            }

            // Every choice can grow to max_tokens; the prompt is held once.
            var maxTokens = pending.Request.Parameters.MaxTokens * choices;
            var hit = _cache?.Find(pending.Tokens!) ?? (null, 0);
            if (_cache is not null && active.Any(a => a.Conversation.RequiresInference && !a.Offered
                    && PrefixCache.CommonPrefix(a.Pending.Tokens, pending.Tokens) >= Math.Max(_cache.MinTokens, hit.Length + _cache.MinTokens)))
            {
                break; // a prompt sharing a longer prefix is being prefilled: start from it after this step
            }

            (var decision, hit) = _budget.Fit(active, pending.Tokens!.Length, maxTokens, hit);
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

            Start(executor, active, pending, pending.Tokens.Length + maxTokens, hit);
        }
    }

    /// <summary>
    /// The checks before the KV budget: a wake-up marker, an abandoned or cancelled request, a prompt that cannot be
    /// rendered, sampling parameters the engine would crash on, more choices than slots. False when the request was
    /// taken off the queue for one of them; true when it may be admitted (its tokens rendered).
    /// </summary>
    private bool Screen(PendingRequest pending, BatchedExecutor executor, PromptRenderer renderer)
    {
        if (pending == PendingRequest.Wake || pending.IsAbandoned)
        {
            _queue.Dequeue(pending);
            return false;
        }

        if (pending.CancelRequested)
        {
            _queue.Dequeue(pending);
            pending.Complete(new GenerationOutcome("", "cancelled", pending.Tokens?.Length ?? 0, 0));
            return false;
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
            return false;
        }

        var invalid = SamplerFactory.Check(pending.Request.Parameters, executor.Model.Vocab.Count)
                      ?? (pending.Request.Parameters.N is var n && n > _options.Slots
                          ? $"n = {n} choices need as many sequence slots; this worker has {_options.Slots}."
                          : null);
        if (invalid is not null)
        {
            _queue.Dequeue(pending);
            pending.Complete(GenerationOutcome.Failed(invalid, pending.Tokens.Length));
            return false;
        }

        return true;
    }

    private void Start(BatchedExecutor executor, List<ActiveSequence> active, PendingRequest pending, int need, (CachedPrefix? Entry, int Length) hit)
    {
        var sequence = ActiveSequence.Start(executor, pending, need, _cache, hit, GrammarBans(pending.Request.Parameters));
        active.Add(sequence);
        if (hit.Entry is not null)
        {
            Counters.PrefixHit(hit.Length);
        }

        Counters.Reserved(_budget.Reserved(active));
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
        ForkChoices(active);
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

            SampleOne(vocab, active, i);
        }
    }

    /// <summary>A request for several choices: once its prompt is prefilled, fork it into the others (one prefill for all).</summary>
    private void ForkChoices(List<ActiveSequence> active)
    {
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
    }

    /// <summary>Samples the next token of sequence <paramref name="i"/> and feeds it back, or ends the sequence.</summary>
    private void SampleOne(LLama.Native.SafeLlamaModelHandle.Vocabulary vocab, List<ActiveSequence> active, int i)
    {
        var s = active[i];
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

            return;
        }

        if (token.IsEndOfGeneration(vocab) && !s.Pending.Request.Parameters.IgnoreEos)
        {
            Finish(active, i, "stop");
            return;
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
    /// The tokens banned under a grammar (<see cref="SamplerFactory.InvalidUtf8Starts"/>): a pass over the whole
    /// vocabulary, made on the first structured request rather than at start-up (cold start counts).
    /// </summary>
    private IReadOnlyCollection<int> GrammarBans(Contracts.GenerationParameters p) =>
        p.Grammar is null ? [] : _grammarBans ??= SamplerFactory.InvalidUtf8Starts(model.Weights.NativeHandle, model.Weights.Vocab.Count);

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
        ChoiceResults.HandOverPrompt(active, index);
        s.Dispose();
        active.RemoveAt(index);
        if (!s.Pending.Request.IsWarmup)
        {
            Counters.Completed();
        }

        ChoiceResults.Record(s, reason);
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
