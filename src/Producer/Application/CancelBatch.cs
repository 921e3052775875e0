using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;

namespace LlmServing.Producer.Application;

/// <summary>
/// The "cancel a batch" use case, for <c>POST /v1/batches/{id}/cancel</c> and the console alike: marks the batch
/// cancelling; queued lines are cancelled at once, running ones asked to stop. The finalizer repeats this until the
/// batch ends, with the output of every line that finished.
/// </summary>
public sealed class CancelBatch(BatchStore batches, BatchLineStore lines)
{
    /// <summary>
    /// The batch before (null: no such batch of this tenant) and after (null: it had already ended, so nothing was
    /// done). Cancelling a batch that is already cancelling is not an error: it answers the batch as it is.
    /// </summary>
    public async Task<(Batch? Before, Batch? After)> RunAsync(string id, string tenantId, CancellationToken ct)
    {
        var before = await batches.FindAsync(id, tenantId, ct);
        if (before is null || before.Status is not (BatchStatuses.Validating or BatchStatuses.InProgress or BatchStatuses.Cancelling))
        {
            return (before, null);
        }

        if (await batches.MarkCancellingAsync(id, tenantId, ct))
        {
            await lines.StopAsync(id, JobStatuses.Cancelled, ct);
        }

        return (before, await batches.FindAsync(id, tenantId, ct));
    }
}
