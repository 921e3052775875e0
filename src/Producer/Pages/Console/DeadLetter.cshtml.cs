using LlmServing.Producer.Jobs;
using LlmServing.Producer.OperatorConsole;
using LlmServing.ResultStore.Jobs;
using Microsoft.AspNetCore.Mvc;

namespace LlmServing.Producer.Pages.Console;

/// <summary>The confirmation step (works without script), then the replay or discard of one dead letter.</summary>
public sealed class DeadLetterModel(BrokerConsole broker, ConsoleQueries queries, JobStore jobs, JobPublisher publisher, ILogger<DeadLetterModel> logger) : ConsolePageModel
{
    [BindProperty(SupportsGet = true)] public string Queue { get; set; } = "";
    [BindProperty(SupportsGet = true)] public string Message { get; set; } = "";
    [BindProperty(SupportsGet = true)] public string Action { get; set; } = "";

    public DeadLetter? Letter { get; private set; }

    public string? JobStatus { get; private set; }

    public async Task<IActionResult> OnGetAsync(CancellationToken ct)
    {
        if (RequireAdmin() is { } forbidden)
        {
            return forbidden;
        }

        if (!Valid())
        {
            return BadRequest("Unknown error queue or action.");
        }

        Letter = (await broker.PeekAsync(Queue, ct)).FirstOrDefault(l => l.MessageId == Message);
        if (Letter?.JobId is { } id)
        {
            JobStatus = (await queries.JobAsync(null, id, ct))?.Status ?? "deleted";
        }

        return Page();
    }

    public async Task<IActionResult> OnPostAsync(CancellationToken ct)
    {
        if (RequireAdmin() is { } forbidden)
        {
            return forbidden;
        }

        if (!Valid())
        {
            return BadRequest("Unknown error queue or action.");
        }

        string notice = "";
        var taken = await broker.TakeAsync(Queue, Message, async letter =>
        {
            if (Action == "discard")
            {
                notice = $"Discarded message {letter.MessageId}.";
                return true;
            }

            if (letter.JobId is not { } jobId)
            {
                notice = "The message names no job: it cannot be replayed, only discarded.";
                return false;
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
                    notice = $"Replayed: job {jobId} is queued again.";
                    return true;
                case ReplayResult.NotFound:
                    notice = $"Job {jobId} no longer exists (deleted); discard the message instead.";
                    return false;
                case ReplayResult.BatchEnded:
                    notice = $"Job {jobId} is a line of batch {outcome.Job!.BatchId}, which has ended: it cannot run again.";
                    return false;
                default:
                    notice = $"Job {jobId} is {outcome.Job!.Status}, not failed: there is nothing to replay. Discard the message if it is no longer needed.";
                    return false;
            }
        }, ct);
        if (taken is null)
        {
            notice = "That message is no longer in the error queue.";
        }

        return Back("/console/dead-letters", notice);
    }

    private bool Valid() => broker.ErrorQueues.Contains(Queue) && Action is "replay" or "discard";
}
