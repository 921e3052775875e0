using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;

// llmserving: a small client of the LlmServing API (talks HTTP only; knows nothing of the servers' code).
// Exit codes: 0 done, 1 the job or batch did not succeed, 2 usage, 3 API unreachable, 4 the API refused (4xx/5xx).
var command = args.FirstOrDefault() ?? "help";
var options = ParseOptions(args.Skip(1).ToArray(), out var positional);
var api = new Uri(options.GetValueOrDefault("api") ?? Environment.GetEnvironmentVariable("LLMSERVING_API") ?? "http://127.0.0.1:5080");
using var http = new HttpClient { BaseAddress = api, Timeout = TimeSpan.FromMinutes(5) };
// API key: --api-key, else $LLMSERVING_API_KEY (the admin commands use --admin-key or $LLMSERVING_ADMIN_KEY).
var apiKey = command == "admin"
    ? options.GetValueOrDefault("admin-key") ?? Environment.GetEnvironmentVariable("LLMSERVING_ADMIN_KEY")
    : options.GetValueOrDefault("api-key") ?? Environment.GetEnvironmentVariable("LLMSERVING_API_KEY");
if (!string.IsNullOrEmpty(apiKey))
{
    http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", apiKey);
}
var json = LlmServing.Cli.Api.Indented;

try
{
    return command switch
    {
        "demo" => await DemoAsync(),
        "load" => await new LlmServing.Cli.LoadCommand(http).RunAsync(options),
        "submit" => await SubmitAsync(),
        "get" or "status" => await GetAsync(),
        "batch" when positional.Count >= 1 => await new LlmServing.Cli.BatchCommands(http).RunAsync(positional[0], positional.Skip(1).ToList(), options),
        "usage" => await UsageAsync("/v1/usage"),
        "admin" when positional is ["usage"] => await UsageAsync("/v1/admin/usage"),
        "admin" when positional is ["create-key", var tenant] => Print(await ReadAsync(await http.PostAsJsonAsync("/v1/admin/keys", new { tenant_id = tenant }))),
        "admin" when positional is ["revoke-key", var keyId] => (await http.DeleteAsync($"/v1/admin/keys/{keyId}")) is { IsSuccessStatusCode: true } ? 0 : 4,
        _ => Program.Usage(),
    };
}
catch (HttpRequestException e)
{
    Console.Error.WriteLine($"llmserving: cannot reach {api} ({e.Message}). Is the Producer running?");
    return 3;
}
catch (LlmServing.Cli.ApiException e)
{
    Console.Error.WriteLine($"llmserving: {e.Message}");
    return 4;
}

// Usage per tenant and day as a table: `llmserving usage [--from YYYY-MM-DD] [--to YYYY-MM-DD]`.
async Task<int> UsageAsync(string path)
{
    var query = string.Join("&", new[] { ("from", "start_date"), ("to", "end_date") }
        .Where(p => options.ContainsKey(p.Item1)).Select(p => $"{p.Item2}={Uri.EscapeDataString(options[p.Item1])}"));
    using var response = await http.GetAsync(query.Length > 0 ? $"{path}?{query}" : path);
    var node = await ReadAsync(response);
    Console.WriteLine($"{"date",-10}  {"tenant",-24} {"jobs",8} {"prompt",12} {"completion",12} {"cached",10}");
    long jobs = 0, prompt = 0, completion = 0, cached = 0;
    foreach (var row in node["data"]!.AsArray())
    {
        var (j, p, c, k) = (row!["jobs"]!.GetValue<long>(), row["prompt_tokens"]!.GetValue<long>(), row["completion_tokens"]!.GetValue<long>(), row["cached_tokens"]!.GetValue<long>());
        (jobs, prompt, completion, cached) = (jobs + j, prompt + p, completion + c, cached + k);
        Console.WriteLine($"{row["date"]!.GetValue<string>(),-10}  {row["tenant_id"]!.GetValue<string>(),-24} {j,8} {p,12} {c,12} {k,10}");
    }

    Console.WriteLine($"{"total",-10}  {node["start_date"]!.GetValue<string>() + ".." + node["end_date"]!.GetValue<string>(),-24} {jobs,8} {prompt,12} {completion,12} {cached,10}");
    return 0;
}

async Task<int> DemoAsync()
{
    var count = int.Parse(options.GetValueOrDefault("jobs") ?? "6", CultureInfo.InvariantCulture);
    var maxTokens = int.Parse(options.GetValueOrDefault("max-tokens") ?? "48", CultureInfo.InvariantCulture);
    // Story openings: the demo's default model is TinyStories 260K (plain completion, no chat template).
    string[] prompts =
    [
        "Once upon a time",
        "Tom had a red ball.",
        "Lily went to the park with her mom.",
        "One day, a little dog",
        "The sun was shining and",
        "Sam wanted to build a big tower.",
    ];
    Console.WriteLine($"Submitting {count} jobs to {api} (max_tokens {maxTokens}) ...");
    var clock = Stopwatch.StartNew();
    var ids = await Task.WhenAll(Enumerable.Range(0, count).Select(async i =>
    {
        object body = i % 2 == 0
            ? new { prompt = prompts[i % prompts.Length], max_tokens = maxTokens, temperature = 0.8, seed = i }
            : new { prompt = prompts[i % prompts.Length], max_tokens = maxTokens, temperature = 0.0, seed = i };
        using var response = await http.PostAsJsonAsync("/v1/jobs", body);
        var node = await ReadAsync(response);
        return node["id"]!.GetValue<string>();
    }));
    var jobs = await Task.WhenAll(ids.Select(id => WaitAsync(id, TimeSpan.FromMinutes(5))));
    var elapsed = clock.Elapsed;

    Console.WriteLine();
    Console.WriteLine($"{"job",-10} {"status",-10} {"prompt",6} {"compl",6} {"queue ms",9} {"run ms",8} {"total ms",9}  output");
    foreach (var j in jobs)
    {
        var usage = j["usage"];
        var t = j["timings"];
        var output = (j["output_text"]?.GetValue<string>() ?? j["error"]?.GetValue<string>() ?? "").ReplaceLineEndings(" ");
        Console.WriteLine(
            $"{j["id"]!.GetValue<string>()[^8..],-10} {j["status"],-10} {usage?["prompt_tokens"],6} {usage?["completion_tokens"],6} " +
            $"{t?["queue_ms"],9} {t?["run_ms"],8} {t?["total_ms"],9}  {(output.Length > 60 ? output[..60] + "..." : output)}");
    }

    var tokens = jobs.Sum(j => j["usage"]?["completion_tokens"]?.GetValue<int>() ?? 0);
    var succeeded = jobs.Count(j => j["status"]!.GetValue<string>() == "succeeded");
    Console.WriteLine();
    Console.WriteLine($"{succeeded}/{jobs.Length} succeeded; {tokens} tokens generated in {elapsed.TotalSeconds:F2} s " +
                      $"({tokens / elapsed.TotalSeconds:F0} tokens/s end to end, submit to last result).");
    return succeeded == jobs.Length ? 0 : 1;
}

async Task<int> SubmitAsync()
{
    var prompt = options.GetValueOrDefault("prompt") ?? positional.FirstOrDefault();
    if (prompt is null)
    {
        return Program.Usage();
    }

    var body = new JsonObject { ["prompt"] = prompt };
    foreach (var (key, name) in new[] { ("max-tokens", "max_tokens"), ("temperature", "temperature"), ("seed", "seed"), ("top-p", "top_p") })
    {
        if (options.TryGetValue(key, out var v))
        {
            body[name] = JsonNode.Parse(v);
        }
    }

    using var response = await http.PostAsJsonAsync("/v1/jobs", body);
    var job = await ReadAsync(response);
    if (options.ContainsKey("wait"))
    {
        job = await WaitAsync(job["id"]!.GetValue<string>(), TimeSpan.FromMinutes(10));
    }

    Console.WriteLine(job.ToJsonString(json));
    return job["status"]!.GetValue<string>() is "queued" or "running" or "succeeded" ? 0 : 1;
}

async Task<int> GetAsync()
{
    if (positional.Count == 0)
    {
        return Program.Usage();
    }

    var wait = options.GetValueOrDefault("wait") ?? "0";
    using var response = await http.GetAsync($"/v1/jobs/{positional[0]}?wait={wait}");
    Console.WriteLine((await ReadAsync(response)).ToJsonString(json));
    return 0;
}

async Task<JsonNode> WaitAsync(string id, TimeSpan timeout)
{
    var deadline = DateTime.UtcNow + timeout;
    while (true)
    {
        using var response = await http.GetAsync($"/v1/jobs/{id}?wait=20");
        var job = await ReadAsync(response);
        var status = job["status"]!.GetValue<string>();
        if (status is "succeeded" or "failed" or "cancelled" || DateTime.UtcNow > deadline)
        {
            return job;
        }
    }
}

static Task<JsonNode> ReadAsync(HttpResponseMessage response) => LlmServing.Cli.Api.ReadAsync(response);

int Print(JsonNode node)
{
    Console.WriteLine(node.ToJsonString(json));
    return 0;
}

static Dictionary<string, string> ParseOptions(string[] args, out List<string> positional)
{
    var result = new Dictionary<string, string>(StringComparer.Ordinal);
    positional = [];
    for (var i = 0; i < args.Length; i++)
    {
        if (args[i].StartsWith('-') && args[i].Length > 1)
        {
            var key = args[i].TrimStart('-');
            result[key] = key is "wait" && (i + 1 >= args.Length || !int.TryParse(args[i + 1], out _)) ? "true"
                : i + 1 < args.Length && !args[i + 1].StartsWith('-') ? args[++i] : "true";
        }
        else
        {
            positional.Add(args[i]);
        }
    }

    return result;
}

internal static partial class Program
{
    internal static int Usage()
    {
        Console.Error.WriteLine("""
            usage: llmserving demo   [--api URL] [--jobs N] [--max-tokens N]
                   llmserving submit [--api URL] "prompt" [--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--wait]
                   llmserving status [--api URL] JOB_ID [--wait SECONDS]
                   llmserving batch submit  FILE.jsonl [--endpoint /v1/chat/completions|/v1/completions] [--wait]
                   llmserving batch status  BATCH_ID
                   llmserving batch results BATCH_ID [-o out.jsonl] [--errors errors.jsonl]
                   llmserving batch cancel  BATCH_ID
                   llmserving load   [--rate JOBS_PER_S] [--duration SECONDS] [--max-tokens N] [--stages] [--submit-only]
                                    (fixed-rate load, report; --stages: the Producer's time per stage; --submit-only: no client follows its job)
                   llmserving usage  [--from YYYY-MM-DD] [--to YYYY-MM-DD]   (jobs and tokens per day; last 30 days)
                   llmserving admin usage [--from ...] [--to ...]          (every tenant)
                   llmserving admin create-key TENANT [--admin-key KEY]     (prints the new key once)
                   llmserving admin revoke-key KEY_ID [--admin-key KEY]
            With API keys on, pass --api-key KEY or set $LLMSERVING_API_KEY ($LLMSERVING_ADMIN_KEY for admin).
            The API defaults to $LLMSERVING_API or http://127.0.0.1:5080.
            Exit codes: 0 done, 1 the job or batch did not succeed, 2 usage, 3 API unreachable, 4 the API refused the request.
            """);
        return 2;
    }
}
