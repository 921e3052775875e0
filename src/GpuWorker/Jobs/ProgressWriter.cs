using System.Collections.Concurrent;
using LlmServing.GpuWorker.Inference;
using LlmServing.ResultStore.Jobs;

namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// Writes the text of running interactive jobs to their rows (<c>partial_text</c>) for streaming, off the scheduler
/// loop: the loop hands over the latest progress per job, and this writes whatever is newest, all jobs in one
/// statement. A database trigger then wakes the Producer's streams. Best effort: a failed write is dropped (the next
/// one carries the whole text so far, and the final result always arrives).
/// </summary>
public sealed class ProgressWriter(JobStore store, ILogger<ProgressWriter> logger) : BackgroundService, IProgressSink
{
    private readonly ConcurrentDictionary<Guid, JobProgress> _latest = new();
    private readonly SemaphoreSlim _signal = new(0);

    public void Report(IReadOnlyList<JobProgress> progress)
    {
        foreach (var p in progress)
        {
            _latest.AddOrUpdate(p.JobId, p, (_, old) => p.Tokens >= old.Tokens ? p : old);
        }

        if (_signal.CurrentCount == 0)
        {
            _signal.Release();
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await _signal.WaitAsync(stoppingToken);
                var batch = new List<JobProgress>();
                foreach (var id in _latest.Keys)
                {
                    if (_latest.TryRemove(id, out var p))
                    {
                        batch.Add(p);
                    }
                }

                if (batch.Count > 0)
                {
                    await store.WriteProgressAsync(
                        [.. batch.Select(p => p.JobId)], [.. batch.Select(p => JobResult.Storable(p.Text))], [.. batch.Select(p => p.Tokens)],
                        stoppingToken);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                logger.LogDebug(e, "Writing streaming progress failed; the next write carries the text so far");
            }
        }
    }
}
