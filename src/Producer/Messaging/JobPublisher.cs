using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.ResultStore.Jobs;
using MassTransit;
using Microsoft.Extensions.Options;

namespace LlmServing.Producer.Messaging;

/// <summary>
/// Sends a committed job's message to the job queue and records the broker's confirm. A failure leaves the job
/// <c>queued</c> with no <c>queued_at</c>; <see cref="PublishSweeper"/> sends it again later.
/// </summary>
public sealed class JobPublisher(IBus bus, JobStore jobs, IOptions<ProducerOptions> options, ILogger<JobPublisher> logger)
    : IAsyncDisposable, IDisposable
{
    /// <summary>Confirms of concurrent requests recorded together (group commit): one UPDATE for all that arrived meanwhile.</summary>
    private readonly ResultStore.GroupCommit<Guid, bool> _confirms = new(jobs.MarkPublishedManyAsync);

    public static readonly JsonSerializerOptions MessageJson = new(JsonSerializerDefaults.Web);

    /// <summary>
    /// Returns true when the broker confirmed the message. <paramref name="message"/>: the job's message when the caller
    /// has it (a new submission), instead of reading it back from the stored request.
    /// </summary>
    public async Task<bool> TryPublishAsync(Job job, CancellationToken ct, GenerateCompletion? message = null)
    {
        try
        {
            message ??= JsonSerializer.Deserialize<GenerateCompletion>(job.Request, MessageJson)
                        ?? throw new JsonException("The request is null.");
        }
        catch (JsonException e)
        {
            // Cannot happen for jobs this API accepted; a row written otherwise must not block the sweep forever.
            logger.LogError("Job {JobId} has an unreadable request and is failed: {Error}", job.Id, e.Message);
            await jobs.FailAsync(job.Id, $"The stored request cannot be read: {e.Message}", null, CancellationToken.None);
            return true;
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(options.Value.PublishTimeout);
        try
        {
            var endpoint = await bus.GetSendEndpoint(new Uri($"queue:{job.Queue ?? options.Value.JobQueue}"));
            await endpoint.Send(message, context => context.MessageId = job.Id, timeout.Token);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            logger.LogWarning("Job {JobId} is accepted but not yet published ({Error}); the sweep will retry", job.Id, e.Message);
            return false;
        }

        try
        {
            await _confirms.SubmitAsync(job.Id);
        }
        catch (Exception e)
        {
            // Sent and confirmed, only not recorded: the sweep sends it again later, and the worker runs it once.
            logger.LogWarning("Job {JobId} was published but its confirm was not recorded ({Error}); the sweep may send it again", job.Id, e.Message);
        }

        return true;
    }

    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    public ValueTask DisposeAsync() => _confirms.DisposeAsync();
}

/// <summary>
/// Periodically republishes this deployment's accepted interactive jobs whose message the broker never confirmed (or that the
/// <see cref="JobReaper"/> requeued), and expires overdue ones.
/// </summary>
public sealed class PublishSweeper(JobStore jobs, JobPublisher publisher, IOptions<ProducerOptions> options, ILogger<PublishSweeper> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.SweepInterval);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                var o = options.Value;
                var unpublished = await jobs.FindUnpublishedAsync(o.JobQueue, o.SweepMinAge, 500, stoppingToken);
                foreach (var job in unpublished)
                {
                    if (!await publisher.TryPublishAsync(job, stoppingToken))
                    {
                        break; // broker still down: try the rest next time
                    }
                }

                if (unpublished.Count > 0)
                {
                    logger.LogInformation("Publish sweep found {Count} unconfirmed job(s)", unpublished.Count);
                }

                // Queued jobs past their deadline show as expired even while no worker runs.
                var expired = await jobs.ExpireOverdueAsync(stoppingToken);
                if (expired > 0)
                {
                    logger.LogInformation("Expired {Count} queued job(s) past their deadline", expired);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning(e, "Publish sweep failed; retrying next interval");
            }
        }
    }
}
