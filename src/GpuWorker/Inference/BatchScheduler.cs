using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using System.Threading.Channels;
using LLama;
using LLama.Batched;
using LLama.Native;
using LLama.Sampling;
using Microsoft.Extensions.Options;

namespace LlmServing.GpuWorker.Inference;

/// <summary>
/// Continuous batching over one llama.cpp <see cref="BatchedExecutor"/>: every step is one <c>llama_decode</c>
/// for all active sequences; a finished sequence frees its slot and KV cells at once and the next waiting request
/// joins the following step (its prefill shares the step with the running decodes). Admission is bounded by the
/// slots and by the KV budget: a request enters only while the context can hold every active prompt plus its
/// <c>max_tokens</c>, so a step never runs out of KV cells in normal operation.
/// The executor is not thread-safe: this loop is its only user.
/// </summary>
public sealed class BatchScheduler(
    LlamaModel model,
    IOptions<InferenceOptions> options,
    ILogger<BatchScheduler> logger) : BackgroundService, IGenerator
{
    // Two lanes: interactive requests are admitted before batch lines whenever a slot frees.
    private readonly Channel<Pending> _incoming = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Channel<Pending> _batch = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly LinkedList<Pending> _retry = new();
    private readonly ConcurrentDictionary<Guid, Pending> _byJob = new();
    private readonly InferenceOptions _options = options.Value;
    private int _failNextDecode;

    public SchedulerCounters Counters { get; } = new();

    /// <summary>Jobs waiting for or holding a slot.</summary>
    public IReadOnlyCollection<Guid> JobIds => [.. _byJob.Keys];

    /// <summary>When the scheduler last held a request (now, while it holds any).</summary>
    public DateTimeOffset LastBusyAt => _byJob.IsEmpty ? new DateTimeOffset(Interlocked.Read(ref _lastBusyTicks), TimeSpan.Zero) : DateTimeOffset.UtcNow;

    private long _lastBusyTicks = DateTimeOffset.UtcNow.UtcTicks;

    public Task<GenerationOutcome> GenerateAsync(GenerationRequest request, CancellationToken ct)
    {
        var pending = new Pending(request, ct);
        _byJob[request.JobId] = pending;
        pending.Completion.Task.ContinueWith(
            _ =>
            {
                _byJob.TryRemove(new KeyValuePair<Guid, Pending>(request.JobId, pending));
                Interlocked.Exchange(ref _lastBusyTicks, DateTimeOffset.UtcNow.UtcTicks);
            },
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        if (!(request.IsBatch ? _batch : _incoming).Writer.TryWrite(pending))
        {
            pending.Completion.TrySetCanceled();
            throw new OperationCanceledException("The scheduler is stopping.");
        }

        return pending.Completion.Task;
    }

    /// <summary>
    /// A user cancelled the job: a waiting request ends before it starts, a running sequence is dropped at the next
    /// step; either way the outcome has finish reason <c>cancelled</c> and the text generated so far.
    /// </summary>
    public bool RequestCancel(Guid jobId)
    {
        if (!_byJob.TryGetValue(jobId, out var pending))
        {
            return false;
        }

        pending.CancelRequested = true;
        _incoming.Writer.TryWrite(Pending.Wake); // an idle loop re-checks its queue
        return true;
    }

    /// <summary>Fault injection for tests: the next decode step is treated as failed (as a NoKvSlot would be).</summary>
    public void FailNextDecode() => Interlocked.Exchange(ref _failNextDecode, 1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await model.Loaded.WaitAsync(stoppingToken);
        await Task.Yield();
        var renderer = new PromptRenderer(model.Weights);
        var executor = new BatchedExecutor(model.Weights, model.Parameters);
        var active = new List<Active>();
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                Admit(executor, renderer, active);
                if (active.Count == 0)
                {
                    Counters.Idle();
                    if (_retry.Count == 0)
                    {
                        await Task.WhenAny(
                            _incoming.Reader.WaitToReadAsync(stoppingToken).AsTask(),
                            _batch.Reader.WaitToReadAsync(stoppingToken).AsTask());
                        stoppingToken.ThrowIfCancellationRequested();
                    }

                    continue;
                }

                var result = await executor.Infer(stoppingToken);
                if (Interlocked.Exchange(ref _failNextDecode, 0) == 1)
                {
                    result = DecodeResult.NoKvSlot;
                }

                if (result != DecodeResult.Ok)
                {
                    executor = Rebuild(executor, active, result);
                    continue;
                }

                Counters.Step(active.Count);
                SampleAll(executor, active);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host stopping: what is still running is returned to the broker by its consumer.
        }
        finally
        {
            _incoming.Writer.TryComplete();
            _batch.Writer.TryComplete();
            foreach (var s in active)
            {
                s.Dispose();
                s.Pending.Completion.TrySetCanceled(stoppingToken);
            }

            foreach (var p in _retry)
            {
                p.Completion.TrySetCanceled(stoppingToken);
            }

            while (_incoming.Reader.TryRead(out var p) || _batch.Reader.TryRead(out p))
            {
                p.Completion.TrySetCanceled(stoppingToken);
            }

            Counters.Idle();
            executor.Dispose();
        }
    }

    private void Admit(BatchedExecutor executor, PromptRenderer renderer, List<Active> active)
    {
        var reserved = active.Sum(s => s.Reserved);
        if (_options.Scheduling == SchedulingMode.Static && active.Count > 0)
        {
            return; // static batches: nothing joins until the whole batch has finished
        }

        while (active.Count < _options.Slots && TryPeek(out var pending))
        {
            if (pending == Pending.Wake || pending.Completion.Task.IsCompleted)
            {
                Dequeue(pending);
                continue;
            }

            if (pending.CancelRequested)
            {
                Dequeue(pending);
                pending.Complete(new GenerationOutcome("", "cancelled", pending.Tokens?.Length ?? 0, 0));
                continue;
            }

            try
            {
                if (_options.FaultInjectionMarker is { Length: > 0 } marker
                    && (pending.Request.Prompt?.Contains(marker, StringComparison.Ordinal) == true
                        || pending.Request.Messages?.Any(m => m.Content.Contains(marker, StringComparison.Ordinal)) == true))
                {
                    throw new InvalidOperationException($"Fault injection: the request contains '{marker}'.");
                }

                pending.Tokens ??= renderer.Render(pending.Request, executor.Context);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // One request that breaks the engine must not stop the loop that serves every other request.
                Dequeue(pending);
                pending.Fail(e);
                continue;
            }

            var maxTokens = pending.Request.Parameters.MaxTokens;
            var need = pending.Tokens.Length + maxTokens;
            if (need > _options.ContextSize)
            {
                Dequeue(pending);
                pending.Complete(GenerationOutcome.Failed(
                    $"The prompt ({pending.Tokens.Length} tokens) plus max_tokens ({maxTokens}) does not fit the " +
                    $"worker's context of {_options.ContextSize} tokens.", pending.Tokens.Length));
                continue;
            }

            if (reserved + need > _options.ContextSize && active.Count > 0)
            {
                break; // waits for KV cells to be freed by a finishing sequence
            }

            Dequeue(pending);
            var conversation = executor.Create();
            conversation.Prompt(pending.Tokens);
            active.Add(new Active(pending, conversation, CreateSampler(pending.Request), new StreamingTokenDecoder(executor.Context), need));
            reserved += need;
            Counters.Reserved(reserved);
        }
    }

    private void SampleAll(BatchedExecutor executor, List<Active> active)
    {
        var vocab = executor.Model.Vocab;
        for (var i = active.Count - 1; i >= 0; i--)
        {
            var s = active[i];
            if (s.Pending.Completion.Task.IsCompleted)
            {
                // Cancelled by its consumer: drop the sequence and free its slot now.
                s.Dispose();
                active.RemoveAt(i);
                continue;
            }

            if (s.Pending.CancelRequested)
            {
                Finish(s, active, i, "cancelled");
                continue;
            }

            if (s.Pending.Request.Parameters.MaxGenerationSeconds is { } limit && s.Elapsed.TotalSeconds >= limit)
            {
                Finish(s, active, i, "time_limit");
                continue;
            }

            if (!s.Conversation.RequiresSampling)
            {
                continue; // still in prefill
            }

            var token = s.Conversation.Sample(s.Sampler);
            if (token.IsEndOfGeneration(vocab) && !s.Pending.Request.Parameters.IgnoreEos)
            {
                Finish(s, active, i, "stop");
                continue;
            }

            Counters.Token();
            s.Generated++;
            s.Decoder.Add(token);
            var before = s.Text.Length;
            s.Text.Append(s.Decoder.Read());
            if (s.HitStop(before))
            {
                Finish(s, active, i, "stop");
            }
            else if (s.Generated >= s.Pending.Request.Parameters.MaxTokens)
            {
                Finish(s, active, i, "length");
            }
            else
            {
                s.Conversation.Prompt(token);
            }
        }
    }

    private void Finish(Active s, List<Active> active, int index, string reason)
    {
        s.Dispose();
        active.RemoveAt(index);
        Counters.Completed();
        s.Pending.Complete(new GenerationOutcome(s.Text.ToString(), reason, s.Pending.Tokens!.Length, s.Generated));
    }

    /// <summary>
    /// After a failed decode the failed batch stays queued inside the executor, so it cannot be reused: free every
    /// sequence, build a new executor and run the affected requests again from their prompts.
    /// </summary>
    private BatchedExecutor Rebuild(BatchedExecutor executor, List<Active> active, DecodeResult result)
    {
        Counters.DecodeFailed();
        logger.LogWarning("llama_decode failed ({Result}) with {Count} active sequences; rebuilding the executor", result, active.Count);
        for (var i = active.Count - 1; i >= 0; i--)
        {
            var s = active[i];
            s.Dispose();
            if (++s.Pending.DecodeFailures > _options.MaxDecodeRetries)
            {
                s.Pending.Complete(GenerationOutcome.Failed($"llama_decode failed ({result}) {s.Pending.DecodeFailures} times.", s.Pending.Tokens?.Length ?? 0));
            }
            else
            {
                _retry.AddFirst(s.Pending);
            }
        }

        active.Clear();
        executor.Dispose();
        return new BatchedExecutor(model.Weights, model.Parameters);
    }

    private static ISamplingPipeline CreateSampler(GenerationRequest request)
    {
        var p = request.Parameters;
        if (p.Temperature <= 0f && !p.IgnoreEos)
        {
            return new GreedySamplingPipeline();
        }

        // Temperature 0 in this pipeline is greedy too; PreventEOS gives the end-of-generation tokens no chance.
        return new DefaultSamplingPipeline
        {
            PreventEOS = p.IgnoreEos,
            Temperature = p.Temperature,
            TopP = p.TopP,
            TopK = 0,
            MinP = 0f,
            RepeatPenalty = 1f,
            Seed = p.Seed ?? (uint)Random.Shared.Next(),
        };
    }

    private bool TryPeek(out Pending pending)
    {
        if (_retry.First is { } first)
        {
            pending = first.Value;
            return true;
        }

        return _incoming.Reader.TryPeek(out pending!) || _batch.Reader.TryPeek(out pending!);
    }

    private void Dequeue(Pending pending)
    {
        if (_retry.First?.Value == pending)
        {
            _retry.RemoveFirst();
        }
        else if (_incoming.Reader.TryPeek(out var head) && head == pending)
        {
            _incoming.Reader.TryRead(out _);
        }
        else
        {
            _batch.Reader.TryRead(out _);
        }
    }

    private sealed class Pending
    {
        /// <summary>Queued by <see cref="RequestCancel"/> to wake an idle loop; never run.</summary>
        public static readonly Pending Wake = new(new GenerationRequest(Guid.Empty, "", null, new() { MaxTokens = 1 }), CancellationToken.None);

        private readonly CancellationTokenRegistration _registration;

        public Pending(GenerationRequest request, CancellationToken ct)
        {
            Request = request;
            _registration = ct.Register(() => Completion.TrySetCanceled(ct));
        }

        public GenerationRequest Request { get; }

        public TaskCompletionSource<GenerationOutcome> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public LLamaToken[]? Tokens { get; set; }

        public int DecodeFailures { get; set; }

        public volatile bool CancelRequested;

        public void Complete(GenerationOutcome outcome)
        {
            _registration.Dispose();
            Completion.TrySetResult(outcome);
        }

        public void Fail(Exception error)
        {
            _registration.Dispose();
            Completion.TrySetException(error);
        }
    }

    private sealed class Active(Pending pending, Conversation conversation, ISamplingPipeline sampler, StreamingTokenDecoder decoder, int reserved)
    {
        private readonly long _started = Stopwatch.GetTimestamp();

        public Pending Pending { get; } = pending;
        public Conversation Conversation { get; } = conversation;
        public ISamplingPipeline Sampler { get; } = sampler;
        public StreamingTokenDecoder Decoder { get; } = decoder;
        public int Reserved { get; } = reserved;
        public StringBuilder Text { get; } = new();
        public int Generated { get; set; }
        public TimeSpan Elapsed => Stopwatch.GetElapsedTime(_started);

        /// <summary>Cuts the text before the first stop string, looking only where new text could complete one.</summary>
        public bool HitStop(int previousLength)
        {
            var cut = -1;
            foreach (var stop in Pending.Request.Parameters.Stop)
            {
                var from = Math.Max(0, previousLength - stop.Length + 1);
                var at = Text.ToString(from, Text.Length - from).IndexOf(stop, StringComparison.Ordinal);
                if (at >= 0 && (cut < 0 || from + at < cut))
                {
                    cut = from + at;
                }
            }

            if (cut < 0)
            {
                return false;
            }

            Text.Length = cut;
            return true;
        }

        public void Dispose()
        {
            Conversation.Dispose();
            Sampler.Dispose();
        }
    }
}
