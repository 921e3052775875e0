using System.Net.Http.Json;
using Npgsql;

namespace LlmServing.Benchmarks;

/// <summary>What one end-to-end run measured, from the jobs' own timestamps in PostgreSQL.</summary>
public sealed record EndToEndResult(int Jobs, int Failed, long Tokens, double Seconds, double[] SubmitToRunningMs, double[] SubmitToDoneMs)
{
    public double TokensPerSecond => Tokens / Seconds;

    public double JobsPerSecond => Jobs / Seconds;

    /// <summary>From the first POST to the last answer: the accept side alone.</summary>
    public double SubmitSeconds { get; init; }
}

/// <summary>Submits jobs over HTTP to a <see cref="BenchStack"/> and measures them until the last one ends.</summary>
public static class EndToEndBenchmark
{
    public static async Task<EndToEndResult> RunAsync(BenchStack stack, string postgres, IReadOnlyList<object> bodies, int concurrency = 32)
    {
        var ids = new Guid[bodies.Count];
        var submitting = System.Diagnostics.Stopwatch.StartNew();
        await Parallel.ForEachAsync(Enumerable.Range(0, bodies.Count), new ParallelOptions { MaxDegreeOfParallelism = concurrency }, async (i, ct) =>
        {
            using var response = await stack.Client.PostAsJsonAsync("/v1/jobs", bodies[i], ct);
            response.EnsureSuccessStatusCode();
            var job = await response.Content.ReadFromJsonAsync<Dictionary<string, object>>(ct);
            ids[i] = Guid.Parse(job!["id"].ToString()!);
        });
        var submitted = submitting.Elapsed.TotalSeconds;
        return await WaitAsync(postgres, ids) with { SubmitSeconds = submitted };
    }

    /// <summary>Waits until every job is final, then reads the run's numbers from the jobs table.</summary>
    public static async Task<EndToEndResult> WaitAsync(string postgres, Guid[] ids)
    {
        await using var connection = new NpgsqlConnection(postgres);
        await connection.OpenAsync();
        while (true)
        {
            await using var count = new NpgsqlCommand(
                "SELECT count(*) FROM jobs WHERE id = ANY(@ids) AND status IN " + LlmServing.ResultStore.StatusSql.FinalJobs, connection);
            count.Parameters.AddWithValue("ids", ids);
            if ((long)(await count.ExecuteScalarAsync())! == ids.Length)
            {
                break;
            }

            await Task.Delay(50);
        }

        await using var read = new NpgsqlCommand("""
            SELECT status, coalesce(completion_tokens, 0), created_at, started_at, finished_at
            FROM jobs WHERE id = ANY(@ids)
            """, connection);
        read.Parameters.AddWithValue("ids", ids);
        await using var reader = await read.ExecuteReaderAsync();
        var failed = 0;
        long tokens = 0;
        var first = DateTime.MaxValue;
        var last = DateTime.MinValue;
        var toRunning = new List<double>();
        var toDone = new List<double>();
        var timeline = new List<(DateTime Created, DateTime? Started, DateTime Finished)>();
        while (await reader.ReadAsync())
        {
            if (reader.GetString(0) != "succeeded")
            {
                failed++;
            }

            tokens += reader.GetInt32(1);
            var created = reader.GetDateTime(2);
            var finished = reader.GetDateTime(4);
            first = created < first ? created : first;
            last = finished > last ? finished : last;
            if (!reader.IsDBNull(3))
            {
                toRunning.Add((reader.GetDateTime(3) - created).TotalMilliseconds);
            }

            toDone.Add((finished - created).TotalMilliseconds);
            timeline.Add((created, reader.IsDBNull(3) ? null : reader.GetDateTime(3), finished));
        }

        if (Environment.GetEnvironmentVariable("LLMSERVING_BENCH_TRACE") == "1")
        {
            Console.WriteLine($"  {ids.Length} ids, {ids.Distinct().Count()} distinct, {timeline.Count} rows");
            foreach (var (c, s, f) in timeline.OrderBy(t => t.Created))
            {
                Console.WriteLine($"  job created +{(c - first).TotalMilliseconds,7:F0} ms  started +{((s ?? c) - first).TotalMilliseconds,7:F0}  finished +{(f - first).TotalMilliseconds,7:F0}");
            }
        }

        return new EndToEndResult(ids.Length, failed, tokens, (last - first).TotalSeconds, [.. toRunning.Order()], [.. toDone.Order()]);
    }

    public static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(p / 100 * sorted.Length) - 1, 0, sorted.Length - 1)];
}
