using LlmServing.Contracts;
using LlmServing.GpuWorker.Inference;
using LlmServing.ResultStore.Jobs;
using MassTransit;
using Microsoft.Extensions.Options;

namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// Runs one job: claim it in PostgreSQL, hand it to the batch scheduler, write the result, and only then return,
/// which acknowledges the message. A crash before the write means the broker redelivers; a duplicate of a job
/// that is already final is acknowledged without running.
/// </summary>
public sealed class GenerateCompletionConsumer(
    JobStore jobs,
    JobWrites writes,
    JobTelemetry telemetry,
    HeldJobs held,
    ConsumeActivity consuming,
    SlotGate slots,
    IGenerator generator,
    IOptions<WorkerOptions> worker,
    ILogger<GenerateCompletionConsumer> logger) : IConsumer<GenerateCompletion>
{
    public async Task Consume(ConsumeContext<GenerateCompletion> context)
    {
        using var busy = consuming.Enter();
        var message = context.Message;
        var ct = context.CancellationToken;
        // Claim only once the job can start: a batch line must not sit "running", its attempts counting, while it
        // waits behind interactive work.
        IDisposable place;
        using (var wait = CancellationTokenSource.CreateLinkedTokenSource(ct))
        {
            wait.CancelAfter(worker.Value.MaxSlotWait);
            try
            {
                place = await slots.EnterAsync(interactive: message.BatchId is null, Math.Max(1, message.Parameters.N), wait.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                // Waited long enough: to the back of its queue (same message id), before the broker's consumer_timeout.
                var endpoint = await context.GetSendEndpoint(context.ReceiveContext.InputAddress);
                await endpoint.Send(message, send => send.MessageId = context.MessageId, ct);
                await jobs.TouchQueuedAsync(message.JobId, CancellationToken.None);
                logger.LogInformation("Job {JobId} waited {Wait} for a slot; sent back to the end of its queue", message.JobId, worker.Value.MaxSlotWait);
                return;
            }
        }

        using var slot = place;
        // A running job is claimed again only by a redelivery (its worker died without acknowledging) or a retry here;
        // a fresh second copy of the message (a duplicate publish) must not run it twice.
        var reclaim = context.ReceiveContext.Redelivered || context.GetRetryAttempt() > 0;
        var job = await writes.TryStartAsync(message.JobId, worker.Value.WorkerId, reclaim, worker.Value.JobLease, ct);
        if (job is null)
        {
            logger.LogInformation("Job {JobId} is final, unknown or running elsewhere; duplicate message acknowledged without running", message.JobId);
            return;
        }

        if (job.Status != JobStatuses.Running)
        {
            logger.LogInformation("Job {JobId} ended {Status} before it started", message.JobId, job.Status);
            return;
        }

        held.Add(message.JobId);
        try
        {
            await RunAsync(message, job, ct);
        }
        finally
        {
            held.Remove(message.JobId);
        }
    }

    private async Task RunAsync(GenerateCompletion message, Job job, CancellationToken ct)
    {
        if (job.Attempts > worker.Value.MaxAttempts)
        {
            // Claimed again and again without finishing: workers died on it, or it threw every time.
            await jobs.FailAsync(message.JobId, $"Gave up after {job.Attempts - 1} attempts that did not finish ({job.Error ?? "the worker stopped while running it"}).", null, CancellationToken.None);
            logger.LogWarning("Job {JobId} failed after {Attempts} attempts", message.JobId, job.Attempts - 1);
            return;
        }

        // One span per run of a job, under the consume span (itself under the HTTP request that accepted the job,
        // through the trace context MassTransit carries): queue wait, admission, first token and the end as events.
        using var activity = JobTelemetry.Source.StartActivity("llm.generate");
        activity?.SetTag("llmserving.job_id", message.JobId.ToString());
        activity?.SetTag("llmserving.batch_id", message.BatchId);
        activity?.SetTag("llmserving.attempt", job.Attempts);
        activity?.AddEvent(new System.Diagnostics.ActivityEvent("queued", job.CreatedAt));
        activity?.AddEvent(new System.Diagnostics.ActivityEvent("claimed", job.StartedAt ?? DateTimeOffset.UtcNow));
        GenerationOutcome outcome;
        try
        {
            outcome = await generator.GenerateAsync(
                new GenerationRequest(message.JobId, message.Prompt, message.Messages, message.Parameters) { IsBatch = message.BatchId is not null },
                ct);
        }
        catch (Exception e) when (e is not OperationCanceledException && job.Attempts >= worker.Value.MaxAttempts)
        {
            // A poison job: fail it with the reason, and let the message go to the error queue for inspection.
            await jobs.FailAsync(message.JobId, $"The engine failed on every attempt ({job.Attempts}): {e.Message}", null, CancellationToken.None);
            logger.LogError(e, "Job {JobId} failed permanently after {Attempts} attempts", message.JobId, job.Attempts);
            throw new PoisonJobException(message.JobId, e);
        }

        telemetry.Record(activity, job, outcome);

        // The result must be durable before the message is acknowledged, so the write ignores the consume token.
        if (outcome.Error is not null)
        {
            logger.LogWarning("Job {JobId} failed: {Error}", message.JobId, outcome.Error);
            await jobs.FailAsync(message.JobId, outcome.Error, outcome.PromptTokens, CancellationToken.None);
            return;
        }

        var result = new JobResult(outcome.Text, outcome.FinishReason ?? "stop", outcome.PromptTokens, outcome.CompletionTokens)
        {
            CachedTokens = outcome.CachedTokens,
            LogprobsJson = outcome.Logprobs is { } logprobs ? LogprobsShape.Serialize(logprobs) : null,
            ChoicesJson = outcome.Choices is { } choices ? LogprobsShape.Choices(choices) : null,
        };
        if (outcome.FinishReason == "cancelled")
        {
            await writes.WriteResultAsync(message.JobId, JobStatuses.Cancelled, result);
            logger.LogInformation("Job {JobId} cancelled after {Completion} tokens", message.JobId, outcome.CompletionTokens);
            return;
        }

        await writes.WriteResultAsync(message.JobId, JobStatuses.Succeeded, result);
        logger.LogInformation(
            "Job {JobId} succeeded: {Prompt} prompt + {Completion} completion tokens, attempt {Attempt}",
            message.JobId, outcome.PromptTokens, outcome.CompletionTokens, job.Attempts);
    }
}

/// <summary>OpenAI's <c>logprobs</c> object: <c>{"content": [{token, logprob, bytes, top_logprobs}]}</c>.</summary>
file static class LogprobsShape
{
    public static string Serialize(IReadOnlyList<TokenLogprob> tokens) => System.Text.Json.JsonSerializer.Serialize(Shape(tokens));

    /// <summary>Every choice: <c>[{index, text, finish_reason, completion_tokens, logprobs}]</c>.</summary>
    public static string Choices(IReadOnlyList<GenerationChoice> choices) => System.Text.Json.JsonSerializer.Serialize(choices.Select(c => new
    {
        index = c.Index,
        text = c.Text.Replace('\0', '\uFFFD'),
        finish_reason = c.FinishReason,
        completion_tokens = c.CompletionTokens,
        logprobs = c.Logprobs is { } l ? Shape(l) : null,
    }));

    private static object Shape(IReadOnlyList<TokenLogprob> tokens) => new
    {
        content = tokens.Select(t => new
        {
            token = t.Token,
            logprob = t.Logprob,
            bytes = t.Bytes.Select(b => (int)b),
            top_logprobs = t.TopLogprobs.Select(a => new { token = a.Token, logprob = a.Logprob, bytes = a.Bytes.Select(b => (int)b) }),
        }),
    };
}

/// <summary>A job that failed on every attempt: not retried; its message goes to the error queue.</summary>
public sealed class PoisonJobException(Guid jobId, Exception inner)
    : Exception($"Job {jobId} failed on every attempt: {inner.Message}", inner);
