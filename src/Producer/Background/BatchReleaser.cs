using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;
using MassTransit;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Messaging;

namespace LlmServing.Producer.Background;

/// <summary>
/// Fair share in the batch lane (ADR 0007). The broker is FIFO, so batch lines are not all sent at ingestion: they wait
/// in PostgreSQL, and this loop keeps at most <see cref="ProducerOptions.BatchWindowPerTenant"/> lines of each tenant in
/// the broker or running, releasing more as lines finish, the tenants' lines interleaved. A tenant's 10-line batch then
/// waits behind one window of another tenant's lines, not behind its 100,000-line backlog. Lines are sent with their
/// job id as message id and marked sent after the broker's confirms; a crash in between sends them again, and workers
/// run a line once.
/// </summary>
public sealed class BatchReleaser(BatchBacklog backlog, IBus bus, IOptions<ProducerOptions> options, ILogger<BatchReleaser> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        using var timer = new PeriodicTimer(o.ReleaseInterval);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                while (await ReleaseAsync(stoppingToken) > 0)
                {
                    // Released some: look again at once (more may have finished meanwhile).
                }
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                logger.LogWarning("Releasing batch lines failed ({Error}); retrying", e.Message);
            }
        }
    }

    /// <summary>One pass; returns how many lines it sent.</summary>
    public async Task<int> ReleaseAsync(CancellationToken ct)
    {
        var o = options.Value;
        await using var release = await backlog.BeginAsync(o.BatchJobQueue, ct);
        if (release is null)
        {
            return 0; // another replica is releasing
        }

        var lines = await release.CandidatesAsync(o.BatchWindowPerTenant, ct);
        if (lines.Count == 0)
        {
            return 0;
        }

        // Tenants side by side: the first line of each, then the second of each, ...
        var interleaved = lines.GroupBy(l => l.TenantId)
            .SelectMany(g => g.Select((line, rank) => (line, rank)))
            .OrderBy(x => x.rank)
            .Select(x => x.line)
            .ToList();
        var endpoint = await bus.GetSendEndpoint(new Uri($"queue:{o.BatchJobQueue}"));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        foreach (var slice in interleaved.Chunk(o.PublishConcurrency))
        {
            await Task.WhenAll(slice.Select(line =>
            {
                var message = JsonSerializer.Deserialize<GenerateCompletion>(line.Request, JobPublisher.MessageJson)!;
                return endpoint.Send(message, context => context.MessageId = line.Id, timeout.Token);
            }));
            await release.MarkSentAsync([.. slice.Select(l => l.Id)], ct);
        }

        return interleaved.Count;
    }
}
