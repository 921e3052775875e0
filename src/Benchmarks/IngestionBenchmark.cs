using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Npgsql;

namespace LlmServing.Benchmarks;

/// <summary>
/// Batch ingestion: a JSONL file of N chat lines uploaded (streamed from disk), validated and bulk-inserted until
/// every line is eligible to run (the batch is <c>published</c>: its lines are in PostgreSQL, from where the releaser
/// sends a tenant's window at a time, ADR 0007). Measures lines/s from the start of the upload to that moment, and the
/// process's peak working set above its level before the upload (the Producer runs in this process; no worker).
/// </summary>
public static class IngestionBenchmark
{
    public static async Task<(double LinesPerSecond, double Seconds, double PeakMegabytes)> RunAsync(BenchServices services, int lines)
    {
        var path = Path.Combine(Path.GetTempPath(), $"llmserving-ingest-{lines}.jsonl");
        await using (var writer = new StreamWriter(path, false, new UTF8Encoding(false)))
        {
            for (var i = 0; i < lines; i++)
            {
                await writer.WriteLineAsync(JsonSerializer.Serialize(new
                {
                    custom_id = $"line-{i}",
                    method = "POST",
                    url = "/v1/chat/completions",
                    body = new { model = "bench", messages = new[] { new { role = "user", content = $"Summarise document number {i} in one sentence." } }, max_tokens = 64 },
                }));
            }
        }

        await using var stack = await BenchStack.StartAsync(services, new() { ["Producer:ContextSize"] = "4096" }, withWorker: false);
        GC.Collect();
        var process = Process.GetCurrentProcess();
        process.Refresh();
        var baseline = process.WorkingSet64;
        long peak = baseline;
        using var sampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                process.Refresh();
                peak = Math.Max(peak, process.WorkingSet64);
                await Task.Delay(25);
            }
        });

        var clock = Stopwatch.StartNew();
        TimeSpan? uploaded = null;
        TimeSpan? validated = null;
        await using (var stream = File.OpenRead(path))
        {
            var file = new StreamContent(stream);
            file.Headers.ContentType = new MediaTypeHeaderValue("application/jsonl");
            using var form = new MultipartFormDataContent { { new StringContent("batch"), "purpose" }, { file, "file", "bench.jsonl" } };
            using var upload = await stack.Client.PostAsync("/v1/files", form);
            upload.EnsureSuccessStatusCode();
            var fileId = JsonNode.Parse(await upload.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
            uploaded = clock.Elapsed;
            using var create = await stack.Client.PostAsJsonAsync("/v1/batches", new { input_file_id = fileId, endpoint = "/v1/chat/completions", completion_window = "24h" });
            create.EnsureSuccessStatusCode();
            var batchId = JsonNode.Parse(await create.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
            await using var db = new NpgsqlConnection(services.Postgres);
            await db.OpenAsync();
            while (true)
            {
                await using var check = new NpgsqlCommand("SELECT published, status FROM batches WHERE id = $1", db);
                check.Parameters.AddWithValue(batchId);
                await using var reader = await check.ExecuteReaderAsync();
                await reader.ReadAsync();
                if (reader.GetString(1) != "validating" && validated is null)
                {
                    validated = clock.Elapsed;
                }

                if (reader.GetBoolean(0))
                {
                    break;
                }

                await Task.Delay(20);
            }
        }

        clock.Stop();
        Console.WriteLine($"  {lines} lines: uploaded after {uploaded?.TotalSeconds:F1} s, validated and inserted after {validated?.TotalSeconds:F1} s, every line eligible to run after {clock.Elapsed.TotalSeconds:F1} s");
        await sampling.CancelAsync();
        await sampler;
        await services.DeleteQueueAsync(stack.Queue);
        File.Delete(path);
        return (lines / clock.Elapsed.TotalSeconds, clock.Elapsed.TotalSeconds, (peak - baseline) / 1048576.0);
    }
}
