using System.Buffers;
using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Files;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Background;

/// <summary>
/// Ends batches: expires the queued lines of a batch past its window, cancels the queued lines of a cancelling
/// batch, and once no line is unfinished claims the batch (in_progress/cancelling -> finalizing, one replica wins)
/// and writes its output and error files in line order, streaming rows into file chunks. Counts are read from the
/// job rows themselves, so they are exact.
/// </summary>
public sealed class BatchFinalizer(
    BatchStore batches,
    BatchLineStore lines,
    FileStore files,
    TimeProvider clock,
    IOptions<ProducerOptions> options,
    IOptions<RetentionOptions> retention,
    ILogger<BatchFinalizer> logger) : BackgroundService
{
    // Output lines as OpenAI writes them: UTF-8 text, not \uXXXX escapes of quotes and non-ASCII.
    private static readonly JsonWriterOptions Plain = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.FinalizeInterval);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await batches.EndOverdueValidationAsync(stoppingToken);
                foreach (var batch in await batches.OpenBatchesAsync(stoppingToken))
                {
                    await AdvanceAsync(batch, stoppingToken);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning(e, "Batch finalization pass failed; retrying next interval");
            }
        }
    }

    private async Task AdvanceAsync(Batch batch, CancellationToken ct)
    {
        var expired = batch.Status == BatchStatuses.InProgress && batch.ExpiresAt < clock.GetUtcNow();
        if (expired)
        {
            await lines.StopAsync(batch.Id, JobStatuses.Expired, ct);
        }
        else if (batch.Status == BatchStatuses.Cancelling)
        {
            await lines.StopAsync(batch.Id, JobStatuses.Cancelled, ct); // lines ingested after the cancel
        }

        // (A batch cancelled while validating gets no more lines: ingestion only appends while it is validating.)
        if (batch.Status != BatchStatuses.Finalizing && await lines.UnfinishedAsync(batch.Id, ct) > 0)
        {
            return;
        }

        if (!await batches.ClaimFinalizationAsync(batch.Id, batch.Status, batch.Status == BatchStatuses.Finalizing ? batch.FinalizingAt : null, ct))
        {
            return;
        }

        var target = batch.CancellingAt is not null ? BatchStatuses.Cancelled
            : expired || batch.ExpiresAt < clock.GetUtcNow() ? BatchStatuses.Expired
            : BatchStatuses.Completed;
        var (output, errors) = await WriteFilesAsync(batch, ct);
        var now = clock.GetUtcNow();
        await files.SetExpiryAsync([output, errors], batch.OutputExpiresAfterSeconds is { } seconds
            ? now.AddSeconds(seconds)
            : RetentionOptions.ExpiryOf(now, retention.Value.OutputFiles), ct);
        await batches.CompleteFinalizationAsync(batch.Id, target, output, errors, ct);
        logger.LogInformation("Batch {BatchId} {Status}: output {Output}, errors {Errors}", batch.Id, target, output, errors);
    }

    private async Task<(string? Output, string? Errors)> WriteFilesAsync(Batch batch, CancellationToken ct)
    {
        await using var output = await files.OpenWriterAsync(batch.TenantId, $"{batch.Id}_output.jsonl", "batch_output", long.MaxValue, ct);
        await using var errors = await files.OpenWriterAsync(batch.TenantId, $"{batch.Id}_errors.jsonl", "batch_output", long.MaxValue, ct);
        var buffer = new ArrayBufferWriter<byte>();
        int outputLines = 0, errorLines = 0;
        await foreach (var row in lines.ReadResultsAsync(batch.Id, ct))
        {
            buffer.ResetWrittenCount();
            await using (var w = new Utf8JsonWriter(buffer, Plain))
            {
                if (row.Status == JobStatuses.Succeeded)
                {
                    BatchOutputLines.WriteOutputLine(w, row, batch.Endpoint);
                }
                else
                {
                    BatchOutputLines.WriteErrorLine(w, row);
                }
            }

            buffer.Write("\n"u8);
            if (row.Status == JobStatuses.Succeeded)
            {
                outputLines++;
                await output.WriteAsync(buffer.WrittenMemory, ct);
            }
            else
            {
                errorLines++;
                await errors.WriteAsync(buffer.WrittenMemory, ct);
            }
        }

        var outputId = outputLines > 0 ? (await output.CompleteAsync(ct)).Id : null;
        var errorId = errorLines > 0 ? (await errors.CompleteAsync(ct)).Id : null;
        return (outputId, errorId);
    }
}
