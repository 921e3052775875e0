using System.Collections.Concurrent;
using System.Threading.Channels;
using LLama.Native;

namespace LlmServing.GpuWorker.Inference;

/// <summary>
/// Requests waiting for a sequence slot, in the order the scheduler admits them: requests to run again after a
/// failed decode first, then interactive requests, then batch lines (llama.cpp's server keeps this queue apart from
/// its slots, in <c>server-queue.cpp</c>). Producers are consumers' threads; the scheduler loop is the only reader.
/// </summary>
internal sealed class AdmissionQueue
{
    private readonly Channel<PendingRequest> _interactive = Channel.CreateUnbounded<PendingRequest>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Channel<PendingRequest> _batch = Channel.CreateUnbounded<PendingRequest>(new UnboundedChannelOptions { SingleReader = true });
    private readonly LinkedList<PendingRequest> _retry = new();
    private readonly ConcurrentDictionary<Guid, PendingRequest> _byJob = new();
    private long _lastBusyTicks = DateTimeOffset.UtcNow.UtcTicks;

    /// <summary>Jobs waiting for or holding a slot.</summary>
    public IReadOnlyCollection<Guid> JobIds => [.. _byJob.Keys];

    /// <summary>When the queue last held a request (now, while it holds any).</summary>
    public DateTimeOffset LastBusyAt => _byJob.IsEmpty ? new DateTimeOffset(Interlocked.Read(ref _lastBusyTicks), TimeSpan.Zero) : DateTimeOffset.UtcNow;

    /// <summary>Counts now as busy: the idle clock starts over (when the worker becomes able to run work).</summary>
    public void Touch() => Interlocked.Exchange(ref _lastBusyTicks, DateTimeOffset.UtcNow.UtcTicks);

    /// <summary>Queues a request in its lane; the task completes when the scheduler ends it.</summary>
    public Task<GenerationOutcome> Enqueue(GenerationRequest request, CancellationToken ct)
    {
        var pending = new PendingRequest(request, ct);
        _byJob[request.JobId] = pending;
        pending.Completion.Task.ContinueWith(
            _ =>
            {
                _byJob.TryRemove(new KeyValuePair<Guid, PendingRequest>(request.JobId, pending));
                Interlocked.Exchange(ref _lastBusyTicks, DateTimeOffset.UtcNow.UtcTicks);
            },
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        if (!(request.IsBatch ? _batch : _interactive).Writer.TryWrite(pending))
        {
            pending.Completion.TrySetCanceled();
            throw new OperationCanceledException("The scheduler is stopping.");
        }

        return pending.Completion.Task;
    }

    /// <summary>Marks a held job as cancelled by its user; false when the queue does not hold it.</summary>
    public bool RequestCancel(Guid jobId)
    {
        if (!_byJob.TryGetValue(jobId, out var pending))
        {
            return false;
        }

        pending.CancelRequested = true;
        _interactive.Writer.TryWrite(PendingRequest.Wake); // an idle loop re-checks its queue
        return true;
    }

    /// <summary>The next request to admit, without taking it.</summary>
    public bool TryPeek(out PendingRequest pending)
    {
        if (_retry.First is { } first)
        {
            pending = first.Value;
            return true;
        }

        return _interactive.Reader.TryPeek(out pending!) || _batch.Reader.TryPeek(out pending!);
    }

    /// <summary>Takes the request <see cref="TryPeek"/> returned.</summary>
    public void Dequeue(PendingRequest pending)
    {
        if (_retry.First?.Value == pending)
        {
            _retry.RemoveFirst();
        }
        else if (_interactive.Reader.TryPeek(out var head) && head == pending)
        {
            _interactive.Reader.TryRead(out _);
        }
        else
        {
            _batch.Reader.TryRead(out _);
        }
    }

    /// <summary>Puts a request that was running back at the very front (its decode failed, it runs again).</summary>
    public void Retry(PendingRequest pending) => _retry.AddFirst(pending);

    /// <summary>Completes when there may be something to admit.</summary>
    public async Task WaitAsync(CancellationToken ct)
    {
        if (_retry.Count > 0)
        {
            return;
        }

        // The waiter that loses must not stay registered on its channel until that channel next gets an item.
        using var waiting = CancellationTokenSource.CreateLinkedTokenSource(ct);
        await Task.WhenAny(_interactive.Reader.WaitToReadAsync(waiting.Token).AsTask(), _batch.Reader.WaitToReadAsync(waiting.Token).AsTask());
        await waiting.CancelAsync();
        ct.ThrowIfCancellationRequested();
    }

    /// <summary>The scheduler stops: nothing more is accepted and every waiting request is cancelled.</summary>
    public void Close(CancellationToken ct)
    {
        _interactive.Writer.TryComplete();
        _batch.Writer.TryComplete();
        foreach (var p in _retry)
        {
            p.Completion.TrySetCanceled(ct);
        }

        _retry.Clear();
        while (_interactive.Reader.TryRead(out var p) || _batch.Reader.TryRead(out p))
        {
            p.Completion.TrySetCanceled(ct);
        }
    }
}

/// <summary>A request from the moment it is queued until it ends, with its tokens once rendered.</summary>
internal sealed class PendingRequest
{
    /// <summary>Queued by <see cref="AdmissionQueue.RequestCancel"/> to wake an idle loop; never run.</summary>
    public static readonly PendingRequest Wake = new(new GenerationRequest(Guid.Empty, "", null, new() { MaxTokens = 1 }), CancellationToken.None);

    private readonly CancellationTokenRegistration _registration;

    public PendingRequest(GenerationRequest request, CancellationToken ct)
    {
        Request = request;
        _registration = ct.Register(() => Completion.TrySetCanceled(ct));
    }

    public GenerationRequest Request { get; }

    public TaskCompletionSource<GenerationOutcome> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The rendered prompt (kept across a retry).</summary>
    public LLamaToken[]? Tokens { get; set; }

    public int DecodeFailures { get; set; }

    /// <summary>With several choices: the first sequence was forked into the others (after its prefill).</summary>
    public bool Forked { get; set; }

    /// <summary>With several choices: the ones that ended so far.</summary>
    public GenerationChoice?[]? Choices { get; set; }

    /// <summary>Prompt tokens the first sequence took from the prefix cache.</summary>
    public int CachedTokens { get; set; }

    public volatile bool CancelRequested;

    /// <summary>Its consumer gave up (host stopping) or the request already ended.</summary>
    public bool IsAbandoned => Completion.Task.IsCompleted;

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
