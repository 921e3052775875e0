using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace LlmServing.Cli;

/// <summary><c>llmserving batch submit|status|results|cancel</c>.</summary>
internal sealed class BatchCommands(HttpClient http)
{
    public async Task<int> RunAsync(string verb, List<string> positional, Dictionary<string, string> options)
    {
        return verb switch
        {
            "submit" when positional.Count == 1 => await SubmitAsync(positional[0], options),
            "status" when positional.Count == 1 => Print(await Api.ReadAsync(await http.GetAsync($"/v1/batches/{positional[0]}"))),
            "results" when positional.Count == 1 => await ResultsAsync(positional[0], options),
            "cancel" when positional.Count == 1 => Print(await Api.ReadAsync(await http.PostAsync($"/v1/batches/{positional[0]}/cancel", null))),
            _ => Program.Usage(),
        };
    }

    private async Task<int> SubmitAsync(string path, Dictionary<string, string> options)
    {
        if (!File.Exists(path))
        {
            Console.Error.WriteLine($"llmserving: no such file: {path}");
            return 2;
        }

        var endpoint = options.GetValueOrDefault("endpoint") ?? "/v1/chat/completions";
        await using var stream = File.OpenRead(path);
        var file = new StreamContent(stream);
        file.Headers.ContentType = new MediaTypeHeaderValue("application/jsonl");
        using var form = new MultipartFormDataContent { { new StringContent("batch"), "purpose" }, { file, "file", Path.GetFileName(path) } };
        var uploaded = await Api.ReadAsync(await http.PostAsync("/v1/files", form));
        var batch = await Api.ReadAsync(await http.PostAsJsonAsync("/v1/batches", new
        {
            input_file_id = uploaded["id"]!.GetValue<string>(),
            endpoint,
            completion_window = "24h",
        }));
        var id = batch["id"]!.GetValue<string>();
        Console.Error.WriteLine($"uploaded {uploaded["bytes"]} bytes as {uploaded["id"]}; batch {id}");
        Console.WriteLine(id);
        if (!options.ContainsKey("wait"))
        {
            return 0;
        }

        var final = await WaitWithProgressAsync(id);
        var status = final["status"]!.GetValue<string>();
        var counts = final["request_counts"]!;
        Console.Error.WriteLine($"batch {id} {status}: {counts["completed"]} completed, {counts["failed"]} failed of {counts["total"]}");
        return status == "completed" ? 0 : 1;
    }

    private async Task<JsonNode> WaitWithProgressAsync(string id)
    {
        JsonNode batch = new JsonObject();
        var clock = Stopwatch.StartNew();
        await AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) })
            .Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async context =>
            {
                var task = context.AddTask("validating", maxValue: 1);
                while (true)
                {
                    batch = await Api.ReadAsync(await http.GetAsync($"/v1/batches/{id}"));
                    var status = batch["status"]!.GetValue<string>();
                    var counts = batch["request_counts"]!;
                    int total = counts["total"]!.GetValue<int>(), completed = counts["completed"]!.GetValue<int>(), failed = counts["failed"]!.GetValue<int>();
                    var rate = (completed + failed) / Math.Max(clock.Elapsed.TotalSeconds, 0.001);
                    task.MaxValue = Math.Max(total, 1);
                    task.Value = completed + failed;
                    task.Description = $"{status}: {completed} ok, {failed} failed / {total} ({rate:F1}/s)";
                    if (status is "completed" or "failed" or "expired" or "cancelled")
                    {
                        task.StopTask();
                        return;
                    }

                    await Task.Delay(500);
                }
            });
        return batch;
    }

    private async Task<int> ResultsAsync(string id, Dictionary<string, string> options)
    {
        var batch = await Api.ReadAsync(await http.GetAsync($"/v1/batches/{id}"));
        var output = options.GetValueOrDefault("o") ?? options.GetValueOrDefault("output") ?? $"{id}_output.jsonl";
        var written = 0;
        foreach (var (fileId, path) in new[] { (batch["output_file_id"], output), (batch["error_file_id"], options.GetValueOrDefault("errors") ?? Path.ChangeExtension(output, null) + "_errors.jsonl") })
        {
            if (fileId is null)
            {
                continue;
            }

            using var response = await http.GetAsync($"/v1/files/{fileId.GetValue<string>()}/content", HttpCompletionOption.ResponseHeadersRead);
            response.EnsureSuccessStatusCode();
            await using var target = File.Create(path);
            await response.Content.CopyToAsync(target);
            Console.Error.WriteLine($"wrote {path}");
            written++;
        }

        if (written == 0)
        {
            Console.Error.WriteLine($"batch {id} is {batch["status"]}: no results yet");
            return 1;
        }

        return 0;
    }

    private static int Print(JsonNode node)
    {
        Console.WriteLine(node.ToJsonString(Api.Indented));
        return 0;
    }
}
