using System.Collections.Concurrent;
using LlmServing.ResultStore.Jobs;
using Microsoft.Extensions.Options;

namespace LlmServing.GpuWorker.Jobs;

/// <summary>The jobs this worker has claimed and not yet finished (claimed, generating, or writing the result).</summary>
public sealed class HeldJobs
{
    private readonly ConcurrentDictionary<Guid, byte> _ids = new();

    public void Add(Guid id) => _ids[id] = 0;

    public void Remove(Guid id) => _ids.TryRemove(id, out _);

    public IReadOnlyCollection<Guid> Snapshot() => [.. _ids.Keys];
}

/// <summary>
/// Renews the leases of the jobs this worker holds, one statement every quarter of <see cref="WorkerOptions.JobLease"/>.
/// A worker that dies, or whose message was dead-lettered while PostgreSQL was down, stops renewing, and the
/// Producer's reaper requeues the job instead of leaving it <c>running</c> for good.
/// </summary>
public sealed class JobLeaseRenewer(HeldJobs held, JobStore jobs, IOptions<WorkerOptions> options, ILogger<JobLeaseRenewer> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var lease = options.Value.JobLease;
        using var timer = new PeriodicTimer(lease / 4);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await jobs.RenewLeasesAsync(held.Snapshot(), lease, stoppingToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning("Lease renewal failed ({Error}); retrying", e.Message);
            }
        }
    }
}
