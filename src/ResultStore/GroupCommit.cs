using System.Threading.Channels;

namespace LlmServing.ResultStore;

/// <summary>
/// Group commit: callers queue a request and await its own result; one loop writes everything that queued up while the
/// previous statement ran, in one statement (at most <c>maxBatch</c> at a time). Nothing waits on a timer: a lone
/// request is written at once, and under load the batches grow by themselves. A failed statement fails every request in
/// it, each caller handling its failure as it would its own statement's.
/// </summary>
public sealed class GroupCommit<TRequest, TResult> : IAsyncDisposable
{
    private readonly Channel<(TRequest Request, TaskCompletionSource<TResult> Done)> _queue =
        Channel.CreateUnbounded<(TRequest, TaskCompletionSource<TResult>)>(new UnboundedChannelOptions { SingleReader = true });

    private readonly Func<IReadOnlyList<TRequest>, CancellationToken, Task<IReadOnlyList<TResult>>> _write;
    private readonly int _maxBatch;
    private readonly Task _loop;
    private long _statements;
    private long _requests;

    /// <param name="write">Writes a batch; returns one result per request, in order.</param>
    /// <param name="maxBatch">Most requests in one statement.</param>
    public GroupCommit(Func<IReadOnlyList<TRequest>, CancellationToken, Task<IReadOnlyList<TResult>>> write, int maxBatch = 256)
    {
        _write = write;
        _maxBatch = maxBatch;
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Statements written so far.</summary>
    public long Statements => Interlocked.Read(ref _statements);

    /// <summary>Requests written so far (divided by <see cref="Statements"/>: the mean group size).</summary>
    public long Requests => Interlocked.Read(ref _requests);

    /// <summary>
    /// Queues <paramref name="request"/> and waits for its result. Cancelling stops the wait, not the write: a request
    /// already queued may still be written.
    /// </summary>
    public Task<TResult> SubmitAsync(TRequest request, CancellationToken ct = default)
    {
        var done = new TaskCompletionSource<TResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_queue.Writer.TryWrite((request, done)))
        {
            throw new ObjectDisposedException(nameof(GroupCommit<TRequest, TResult>));
        }

        return ct.CanBeCanceled ? done.Task.WaitAsync(ct) : done.Task;
    }

    private async Task LoopAsync()
    {
        var batch = new List<(TRequest Request, TaskCompletionSource<TResult> Done)>(_maxBatch);
        while (await _queue.Reader.WaitToReadAsync())
        {
            batch.Clear();
            while (batch.Count < _maxBatch && _queue.Reader.TryRead(out var item))
            {
                batch.Add(item);
            }

            try
            {
                var results = await _write(batch.ConvertAll(b => b.Request), CancellationToken.None);
                for (var i = 0; i < batch.Count; i++)
                {
                    batch[i].Done.TrySetResult(results[i]);
                }
            }
            catch (Exception e)
            {
                foreach (var (_, done) in batch)
                {
                    done.TrySetException(e);
                }
            }

            Interlocked.Increment(ref _statements);
            Interlocked.Add(ref _requests, batch.Count);
        }
    }

    /// <summary>Writes what is queued, then stops.</summary>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _loop;
    }
}
