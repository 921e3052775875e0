using LlmServing.ResultStore;
using LlmServing.ResultStore.Jobs;

namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// The worker's group commit (<see cref="GroupCommit{TRequest,TResult}"/>): the claims of every job starting at
/// about the same time are one statement, and so are the results of every job ending at about the same time (one decode
/// step often ends several). Each consumer still awaits its own write before its message is acknowledged, so no job is
/// acknowledged before its result is durable.
/// </summary>
public sealed class JobWrites(JobStore jobs) : IAsyncDisposable, IDisposable
{
    private readonly GroupCommit<StartRequest, Job?> _claims = new(jobs.TryStartManyAsync);
    private readonly GroupCommit<ResultWrite, bool> _results = new(jobs.WriteResultsAsync);

    /// <summary>Claim statements and claims so far.</summary>
    public (long Statements, long Requests) Claims => (_claims.Statements, _claims.Requests);

    /// <summary>Result statements and results so far.</summary>
    public (long Statements, long Requests) Results => (_results.Statements, _results.Requests);

    /// <summary>As <see cref="JobStore.TryStartAsync"/>, grouped with other claims.</summary>
    public Task<Job?> TryStartAsync(Guid id, string workerId, bool reclaimRunning, TimeSpan lease, CancellationToken ct) =>
        _claims.SubmitAsync(new StartRequest(id, workerId, reclaimRunning, lease), ct);

    /// <summary>Writes a final result (<c>succeeded</c> or <c>cancelled</c>), grouped with others; false when the job was already final.</summary>
    public Task<bool> WriteResultAsync(Guid id, string status, JobResult result) =>
        _results.SubmitAsync(new ResultWrite(id, status, result));

    /// <summary>For a synchronous host dispose: writes what is queued, then stops.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    public async ValueTask DisposeAsync()
    {
        await _claims.DisposeAsync();
        await _results.DisposeAsync();
    }
}
