using System.Net.Http.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace LlmServing.Benchmarks;

/// <summary>
/// The floor of the submit path's HTTP part on this machine: the plumbing benchmark's own load client (same body, 32
/// concurrent submitters, JSON in and out) against a Kestrel endpoint that reads the body and answers an id, with no
/// database, broker or validation. Its CPU per request (this process: client and server) is a cost every job of the real path pays too.
/// </summary>
public static class HttpFloorBenchmark
{
    public static async Task<(double RequestsPerSecond, double CpuMsPerRequest)> RunAsync(int requests, int concurrency = 32)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        await using var app = builder.Build();
        app.MapPost("/v1/jobs", async (HttpRequest request) =>
        {
            using var body = await System.Text.Json.JsonDocument.ParseAsync(request.Body);
            return Results.Json(new { id = Guid.CreateVersion7(), status = "queued" }, statusCode: StatusCodes.Status202Accepted);
        });
        await app.StartAsync();
        using var client = new HttpClient { BaseAddress = new Uri(app.Urls.First()) };
        var body = new { prompt = "plumbing", max_tokens = 16 };

        async Task SendAsync(int count) => await Parallel.ForEachAsync(Enumerable.Range(0, count),
            new ParallelOptions { MaxDegreeOfParallelism = concurrency }, async (i, ct) =>
            {
                using var response = await client.PostAsJsonAsync("/v1/jobs", body, ct);
                response.EnsureSuccessStatusCode();
                var job = await response.Content.ReadFromJsonAsync<Dictionary<string, object>>(ct);
                _ = Guid.Parse(job!["id"].ToString()!) == Guid.Empty ? throw new InvalidOperationException($"request {i}: no id") : 0;
            });

        await SendAsync(Math.Min(2000, requests)); // warm-up
        var before = CpuSample.Take();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await SendAsync(requests);
        clock.Stop();
        var cpu = CpuSample.Take() - before;
        await app.StopAsync();
        return (requests / clock.Elapsed.TotalSeconds, cpu.PerJobMs(requests).Self);
    }
}
