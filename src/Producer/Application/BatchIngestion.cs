using System.Buffers;
using System.Text.Json;
using Hangfire;
using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Files;
using MassTransit;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Messaging;

namespace LlmServing.Producer.Application;

/// <summary>Hears each chunk of lines ingestion has made durable (registered by whoever needs it: tests, tooling).</summary>
public interface IBatchIngestionObserver
{
    /// <summary>After a chunk's COPY and resume point committed; <paramref name="lines"/> lines of the batch are in.</summary>
    Task ChunkWrittenAsync(string batchId, int lines, CancellationToken ct);
}

/// <summary>
/// The durable background job (Hangfire) that turns a batch file into job rows. It streams the file from PostgreSQL,
/// validates each line, and writes chunks of lines with one binary COPY each together with the resume point (the
/// byte offset after the chunk). Then the batch is handed to <see cref="BatchReleaser"/>, which sends its lines as its
/// tenant's window allows (ADR 0007). Any step can crash: a re-run resumes from the recorded offset, so no line is
/// lost or inserted twice. Two runs at once are harmless too: a chunk is only written if the resume point is still
/// where the run started it.
/// </summary>
public sealed class BatchIngestion(
    BatchStore batches,
    BatchLineStore lines,
    FileStore files,
    IOptions<ProducerOptions> options,
    IOptions<JsonOptions> json,
    IEnumerable<IBatchIngestionObserver> observers,
    ILogger<BatchIngestion> logger)
{
    private readonly IBatchIngestionObserver[] _observers = [.. observers];

    /// <summary>
    /// Enqueues a run on this Producer's ingestion queue. The queue is recorded on the job itself, so that Hangfire's
    /// automatic retries come back to the same queue (an <c>EnqueuedState</c> alone sends them to "default", which
    /// no server here reads).
    /// </summary>
    public static string Enqueue(IBackgroundJobClient client, string queue, string batchId) =>
        client.Enqueue<BatchIngestion>(queue, x => x.RunAsync(batchId, CancellationToken.None));

    [AutomaticRetry(Attempts = 10, DelaysInSeconds = [1, 2, 5, 10, 30])]
    public async Task RunAsync(string batchId, CancellationToken ct)
    {
        try
        {
            await RunOnceAsync(batchId, ct);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogWarning(e, "Batch {BatchId}: ingestion failed; Hangfire retries it from where it stopped", batchId);
            try
            {
                // A retry is on its way: the stalled-ingestion reaper need not start a second one meanwhile.
                await batches.TouchIngestionAsync(batchId, CancellationToken.None);
            }
            catch (Exception touch) when (touch is not OperationCanceledException)
            {
                logger.LogDebug("Batch {BatchId}: heartbeat not recorded ({Error})", batchId, touch.Message);
            }

            throw;
        }
    }

    private async Task RunOnceAsync(string batchId, CancellationToken ct)
    {
        var batch = await batches.FindAsync(batchId, ct);
        if (batch is null)
        {
            return;
        }

        if (batch.Status == BatchStatuses.Validating && !await IngestAsync(batch, ct))
        {
            return;
        }

        batch = await batches.FindAsync(batchId, ct);
        if (batch is { Status: BatchStatuses.InProgress, Published: false })
        {
            // Every line is in PostgreSQL: from here the batch releaser sends them, a tenant's window at a time (ADR 0007).
            await batches.MarkAllPublishedAsync(batch.Id, ct);
            logger.LogInformation("Batch {BatchId}: ingested; its lines are released to {Queue} as its tenant's window allows", batch.Id, batch.JobQueue);
        }
    }

    /// <summary>Returns false when the batch failed validation or stopped being validating.</summary>
    private async Task<bool> IngestAsync(Batch batch, CancellationToken ct)
    {
        var o = options.Value;
        var parser = await ParserForAsync(batch, ct);
        await using var stream = files.OpenRead(batch.InputFileId, batch.IngestedBytes);
        var reader = new LineReader(stream, o.MaxLineBytes);
        var offset = batch.IngestedBytes;
        var lineNumber = batch.IngestedLines;
        var rows = new List<BatchLineRow>(o.IngestionChunkLines);
        var chunkStart = offset;
        var sawContent = batch.IngestedLines > 0;
        // One chunk is written (COPY) while the next is parsed: PostgreSQL and the parser work side by side. Chunks still
        // go in order, one at a time, each with its resume point.
        Task<bool>? writing = null;
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            offset += line.ConsumedBytes;
            var text = line.Bytes.AsSpan();
            if (IsBlank(text))
            {
                continue;
            }

            lineNumber++; // blank lines are not lines of the batch
            if (lineNumber > o.MaxBatchRequests)
            {
                await FailOverLimitAsync(batch, writing, o.MaxBatchRequests, ct);
                return false;
            }

            if (!sawContent)
            {
                sawContent = true;
                // A UTF-8 byte order mark (as some editors write) is not part of the first line.
                text = text.StartsWith(Utf8Bom) ? text[Utf8Bom.Length..] : text;
                if (!line.TooLong && !LooksLikeJsonObject(text))
                {
                    await batches.FinishValidationAsync(batch.Id, NotJsonl(), ct);
                    return false;
                }
            }

            rows.Add(Row(parser, lineNumber, text, line.TooLong, o.MaxLineBytes));
            if (rows.Count >= o.IngestionChunkLines)
            {
                if (writing is not null && !await writing)
                {
                    return false;
                }

                writing = FlushAsync(batch, chunkStart, offset, lineNumber, rows, ct);
                rows = new List<BatchLineRow>(o.IngestionChunkLines);
                chunkStart = offset;
            }
        }

        if ((writing is not null && !await writing) || !await FlushAsync(batch, chunkStart, offset, lineNumber, rows, ct))
        {
            return false;
        }

        await batches.FinishValidationAsync(batch.Id, sawContent ? null : Errors(("empty_file", "The file has no lines.", null)), ct);
        if (sawContent)
        {
            logger.LogInformation("Batch {BatchId}: {Lines} lines ingested", batch.Id, lineNumber);
        }

        return sawContent;
    }

    /// <summary>
    /// The file has more requests than a batch may hold: the lines written so far (never released: a batch's lines go
    /// out only once it is in progress) are cancelled first, then the batch fails. If this run stops in between, the
    /// batch is still validating, and the resumed ingestion reaches the limit again.
    /// </summary>
    private async Task FailOverLimitAsync(Batch batch, Task<bool>? writing, int limit, CancellationToken ct)
    {
        if (writing is not null)
        {
            await writing;
        }

        await lines.StopAsync(batch.Id, JobStatuses.Cancelled, ct);
        await batches.FinishValidationAsync(batch.Id, Errors(("too_many_requests",
            $"The file has more than {limit} requests; a batch holds at most {limit} (Producer__MaxBatchRequests). Split it into several batches.",
            limit + 1)), ct);
        logger.LogInformation("Batch {BatchId}: more than {Limit} requests; failed before any line ran", batch.Id, limit);
    }

    /// <summary>The batch's line parser; when ingestion resumes, it knows the custom_ids already taken.</summary>
    private async Task<BatchLineParser> ParserForAsync(Batch batch, CancellationToken ct)
    {
        var parser = new BatchLineParser(batch.Endpoint, batch.Id, batch.TenantId, options.Value, json.Value.SerializerOptions);
        if (batch.IngestedBytes > 0)
        {
            parser.Seen(await lines.CustomIdsAsync(batch.Id, ct));
            logger.LogInformation("Batch {BatchId}: resuming ingestion at line {Line} (byte {Offset})", batch.Id, batch.IngestedLines + 1, batch.IngestedBytes);
        }

        return parser;
    }

    private static string NotJsonl() => Errors(("invalid_file",
        "The file is not JSONL: its first line is not a JSON object. Each line must be one request " +
        "{\"custom_id\", \"method\", \"url\", \"body\"}.", 1));

    /// <summary>A line as its row: the job it becomes, or its own error (too long, or refused by the parser).</summary>
    private static BatchLineRow Row(BatchLineParser parser, int lineNumber, ReadOnlySpan<byte> text, bool tooLong, int maxLineBytes)
    {
        var parsed = tooLong
            ? new BatchLine(lineNumber, null, null, $"Line {lineNumber} is longer than the limit of {maxLineBytes} bytes.")
            : parser.Parse(lineNumber, text);
        return new BatchLineRow(
            parsed.Job?.JobId ?? Guid.CreateVersion7(), lineNumber, parsed.CustomId,
            parsed.Job is null ? null : JsonSerializer.Serialize(parsed.Job, JobPublisher.MessageJson), parsed.Error,
            parsed.Job is null ? 0 : EstimatedTokens(parsed.Job));
    }

    private async Task<bool> FlushAsync(Batch batch, long from, long to, int lineCount, List<BatchLineRow> rows, CancellationToken ct)
    {
        if (!await lines.AppendAsync(batch, from, to, lineCount, rows, ct))
        {
            logger.LogWarning("Batch {BatchId}: ingestion progressed elsewhere or the batch was cancelled; stopping this run", batch.Id);
            return false;
        }

        rows.Clear();
        foreach (var observer in _observers)
        {
            await observer.ChunkWrittenAsync(batch.Id, lineCount, ct);
        }

        return true;
    }

    /// <summary>A request's weight against the enqueued-token quota: prompt characters / 4 + max_tokens for every choice.</summary>
    public static int EstimatedTokens(GenerateCompletion job)
    {
        long characters = job.Prompt?.Length ?? job.Messages?.Sum(m => m.Content.Length) ?? 0;
        return (int)Math.Min(int.MaxValue, (characters / 4) + ((long)job.Parameters.MaxTokens * job.Parameters.N));
    }

    private static ReadOnlySpan<byte> Utf8Bom => [0xEF, 0xBB, 0xBF];

    private static string Errors(params (string Code, string Message, int? Line)[] errors) =>
        JsonSerializer.Serialize(errors.Select(e => new { code = e.Code, message = e.Message, param = (string?)null, line = e.Line }));

    private static bool IsBlank(ReadOnlySpan<byte> text)
    {
        foreach (var b in text)
        {
            if (b is not ((byte)' ' or (byte)'\t' or (byte)'\r'))
            {
                return false;
            }
        }

        return true;
    }

    private static bool LooksLikeJsonObject(ReadOnlySpan<byte> text)
    {
        try
        {
            using var document = JsonDocument.Parse(text.ToArray());
            return document.RootElement.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>A line's bytes (without the newline) and how many bytes it took in the file.</summary>
    private readonly record struct Line(byte[] Bytes, long ConsumedBytes, bool TooLong);

    /// <summary>Reads '\n'-terminated lines from a stream, never buffering more than one line (plus 64 KiB).</summary>
    private sealed class LineReader(Stream stream, int maxLineBytes)
    {
        private readonly byte[] _buffer = new byte[64 * 1024];
        private int _start;
        private int _end;
        private bool _eof;

        public async Task<Line?> ReadLineAsync(CancellationToken ct)
        {
            var line = new ArrayBufferWriter<byte>();
            long consumed = 0;
            var tooLong = false;
            while (true)
            {
                if (_start == _end)
                {
                    if (_eof)
                    {
                        return consumed == 0 ? null : new Line(tooLong ? [] : line.WrittenSpan.ToArray(), consumed, tooLong);
                    }

                    _start = 0;
                    _end = await stream.ReadAsync(_buffer, ct);
                    _eof = _end == 0;
                    continue;
                }

                var span = _buffer.AsSpan(_start, _end - _start);
                var newline = span.IndexOf((byte)'\n');
                var take = newline >= 0 ? newline : span.Length;
                if (!tooLong && line.WrittenCount + take > maxLineBytes)
                {
                    tooLong = true;
                }

                if (!tooLong)
                {
                    line.Write(span[..take]);
                }

                consumed += take + (newline >= 0 ? 1 : 0);
                _start += take + (newline >= 0 ? 1 : 0);
                if (newline >= 0)
                {
                    var bytes = tooLong ? [] : line.WrittenSpan.ToArray();
                    return new Line(bytes.Length > 0 && bytes[^1] == (byte)'\r' ? bytes[..^1] : bytes, consumed, tooLong);
                }
            }
        }
    }
}
