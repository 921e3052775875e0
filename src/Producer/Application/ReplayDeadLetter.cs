using LlmServing.ResultStore.Jobs;
using LlmServing.Producer.Messaging;

namespace LlmServing.Producer.Application;

/// <summary>
/// The "replay or discard a dead letter" use case: takes the message off its error queue only when the action
/// succeeds. A replay puts the failed job back to queued (an interactive job is published at once; a batch line goes
/// out through the releaser); a message that names no job, a deleted job, a job that is not failed or a line of an
/// ended batch stay in the queue, with the reason. The console page is a thin adapter over it.
/// </summary>
public sealed class ReplayDeadLetter(BrokerConsole broker, JobStore jobs, JobPublisher publisher, ILogger<ReplayDeadLetter> logger)
{
    /// <summary>What happened, for the operator.</summary>
    public async Task<string> HandleAsync(string queue, string messageId, bool discard, CancellationToken ct)
    {
        var notice = "";
        var taken = await broker.TakeAsync(queue, messageId, async letter =>
        {
            if (discard)
            {
                notice = $"Discarded message {letter.MessageId}.";
                return true;
            }

            (var replayed, notice) = await ReplayAsync(letter, ct);
            return replayed;
        }, ct);
        return taken is null ? "That message is no longer in the error queue." : notice;
    }

    private async Task<(bool Replayed, string Notice)> ReplayAsync(DeadLetter letter, CancellationToken ct)
    {
        if (letter.JobId is not { } jobId)
        {
            return (false, "The message names no job: it cannot be replayed, only discarded.");
        }

        var outcome = await jobs.ReplayFailedAsync(jobId, ct);
        switch (outcome.Result)
        {
            case ReplayResult.Replayed:
                // Interactive: publish now (the sweep sends it if this fails); a batch line goes out through the releaser.
                if (outcome.Job!.BatchId is null && !await publisher.TryPublishAsync(outcome.Job, ct))
                {
                    logger.LogWarning("Replayed job {JobId} is queued; the broker did not confirm yet, the sweep will send it", jobId);
                }

                logger.LogInformation("Dead letter {MessageId} replayed: job {JobId} queued again", letter.MessageId, jobId);
                return (true, $"Replayed: job {jobId} is queued again.");
            case ReplayResult.NotFound:
                return (false, $"Job {jobId} no longer exists (deleted); discard the message instead.");
            case ReplayResult.BatchEnded:
                return (false, $"Job {jobId} is a line of batch {outcome.Job!.BatchId}, which has ended: it cannot run again.");
            default:
                return (false, $"Job {jobId} is {outcome.Job!.Status}, not failed: there is nothing to replay. Discard the message if it is no longer needed.");
        }
    }
}
