using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace LlmServing.Cli;

/// <summary>
/// <c>llmserving load</c>: submits jobs at a fixed rate for a while, each followed by a polling client (long-poll) until
/// it ends, then reports accepted, rejected (429), errors, completed and failed, and latency percentiles.
/// </summary>
internal sealed class LoadCommand(HttpClient http)
{
    public async Task<int> RunAsync(Dictionary<string, string> options)
    {
        var rate = double.Parse(options.GetValueOrDefault("rate") ?? "10", System.Globalization.CultureInfo.InvariantCulture);
        var duration = TimeSpan.FromSeconds(double.Parse(options.GetValueOrDefault("duration") ?? "60", System.Globalization.CultureInfo.InvariantCulture));
        var maxTokens = int.Parse(options.GetValueOrDefault("max-tokens") ?? "16", System.Globalization.CultureInfo.InvariantCulture);
        // Only the accept side: no client follows its job (with workers stopped, what is left is the Producer's path).
        var submitOnly = options.ContainsKey("submit-only");
        int accepted = 0, rejected = 0, errors = 0, serverErrors = 0, completed = 0, failed = 0;
        var submit = new List<double>();
        var ids = new HashSet<string>();
        var watch = options.GetValueOrDefault("watch-process"); // e.g. LlmServing.Producer: its memory is sampled
        var memory = new List<long>();
        using var sampling = new CancellationTokenSource();
        var sampler = watch is null ? Task.CompletedTask : Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                var bytes = Process.GetProcessesByName(watch).Sum(p => { p.Refresh(); return p.WorkingSet64; });
                lock (memory)
                {
                    memory.Add(bytes);
                }

                await Task.Delay(1000);
            }
        });
        var total = new List<double>();
        var queue = new List<double>();
        var pollers = new List<Task>();
        var clock = Stopwatch.StartNew();
        Console.Error.WriteLine($"load: {rate} jobs/s for {duration.TotalSeconds} s, max_tokens {maxTokens}, against {http.BaseAddress}");
        var stagesBefore = options.ContainsKey("stages") ? await ScrapeStagesAsync() : null;
        // A fixed rate that catches up: each tick sends what is due by now (a timer alone drifts below high rates).
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(Math.Clamp(1000 / rate, 1, 1000)));
        var sent = 0;
        while (clock.Elapsed < duration && await timer.WaitForNextTickAsync())
        {
            var due = (int)(Math.Min(clock.Elapsed.TotalSeconds, duration.TotalSeconds) * rate);
            while (sent < due)
            {
                var n = sent++;
                pollers.Add(Task.Run(async () =>
                {
                    try
                    {
                        var started = Stopwatch.GetTimestamp();
                        using var response = await http.PostAsJsonAsync("/v1/jobs", new { prompt = $"Load test request {n}", max_tokens = maxTokens });
                        lock (submit)
                        {
                            submit.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                        }

                        if ((int)response.StatusCode >= 500)
                        {
                            Interlocked.Increment(ref serverErrors);
                        }

                        if ((int)response.StatusCode == 429)
                        {
                            Interlocked.Increment(ref rejected);
                            return;
                        }

                        if ((int)response.StatusCode != 202)
                        {
                            Interlocked.Increment(ref errors);
                            return;
                        }

                        Interlocked.Increment(ref accepted);
                        var id = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
                        lock (ids)
                        {
                            ids.Add(id);
                        }

                        if (submitOnly)
                        {
                            return;
                        }

                        while (true)
                        {
                            var job = JsonNode.Parse(await http.GetStringAsync($"/v1/jobs/{id}?wait=10"))!;
                            var status = job["status"]!.GetValue<string>();
                            if (status is "queued" or "running")
                            {
                                continue;
                            }

                            lock (total)
                            {
                                if (status == "succeeded" && job["attempts"]!.GetValue<int>() == 1)
                                {
                                    completed++;
                                    total.Add(job["timings"]!["total_ms"]!.GetValue<double>());
                                    queue.Add(job["timings"]!["queue_ms"]!.GetValue<double>());
                                }
                                else
                                {
                                    failed++;
                                }
                            }

                            return;
                        }
                    }
                    catch (HttpRequestException)
                    {
                        Interlocked.Increment(ref errors);
                    }
                }));
            }
        }

        var sendSeconds = clock.Elapsed.TotalSeconds;
        var stagesAfter = stagesBefore is null ? null : await ScrapeStagesAsync();

        await Task.WhenAll(pollers);
        await sampling.CancelAsync();
        await sampler;
        static double P(List<double> v, double p) => v.Count == 0 ? double.NaN : v.Order().ElementAt(Math.Clamp((int)Math.Ceiling(p / 100 * v.Count) - 1, 0, v.Count - 1));
        var elapsed = clock.Elapsed.TotalSeconds;
        Console.WriteLine("| sent | accepted | distinct ids | rejected (429) | 5xx | other errors | completed once | failed or rerun | submit ms p50 / p95 / p99 | total ms p50 / p95 / p99 | queue ms p50 / p95 / p99 |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        Console.WriteLine($"| {sent} | {accepted} | {ids.Count} | {rejected} | {serverErrors} | {errors - serverErrors} | {completed} | {failed} | " +
                          $"{P(submit, 50):F1} / {P(submit, 95):F1} / {P(submit, 99):F1} | {P(total, 50):F0} / {P(total, 95):F0} / {P(total, 99):F0} | " +
                          $"{P(queue, 50):F0} / {P(queue, 95):F0} / {P(queue, 99):F0} |");
        Console.WriteLine($"{elapsed:F0} s in all; submitted at {sent / sendSeconds:F1}/s (asked {rate}/s), completed at {completed / elapsed:F1}/s");
        if (stagesBefore is not null && stagesAfter is not null)
        {
            // The Producer's own timing of each stage of the submissions above (its histogram, bucket bounds).
            Console.WriteLine("| Producer stage | requests | mean ms | p50 ms (<=) | p99 ms (<=) |");
            Console.WriteLine("|---|---:|---:|---:|---:|");
            foreach (var stage in new[] { "read", "insert", "publish", "total" })
            {
                var (count, sum, buckets) = stagesAfter.GetValueOrDefault(stage);
                var (count0, sum0, buckets0) = stagesBefore.GetValueOrDefault(stage);
                var n = count - count0;
                if (n <= 0 || buckets is null)
                {
                    continue;
                }

                string Bound(double q)
                {
                    foreach (var (le, cumulative) in buckets.OrderBy(b => b.Key))
                    {
                        if (cumulative - (buckets0?.GetValueOrDefault(le) ?? 0) >= q * n)
                        {
                            return double.IsPositiveInfinity(le) ? "> last bucket" : (le * 1000).ToString("0.#", System.Globalization.CultureInfo.InvariantCulture);
                        }
                    }

                    return "?";
                }

                Console.WriteLine($"| {stage} | {n:F0} | {(sum - sum0) / n * 1000:F1} | {Bound(0.5)} | {Bound(0.99)} |");
            }
        }
        if (memory.Count > 0)
        {
            Console.WriteLine($"{watch} working set: start {memory[0] / 1048576.0:F0} MB, peak {memory.Max() / 1048576.0:F0} MB, end {memory[^1] / 1048576.0:F0} MB");
        }

        return errors == 0 && failed == 0 && (submitOnly || completed == accepted) && ids.Count == accepted ? 0 : 1;
    }

    /// <summary>
    /// <c>llmserving_submit_stage_seconds</c> from the Producer's <c>/metrics</c>: per stage, count, sum and cumulative
    /// bucket counts by upper bound.
    /// </summary>
    private async Task<Dictionary<string, (double Count, double Sum, Dictionary<double, double>? Buckets)>> ScrapeStagesAsync()
    {
        var result = new Dictionary<string, (double Count, double Sum, Dictionary<double, double>? Buckets)>();
        var text = await http.GetStringAsync("/metrics");
        var pattern = new System.Text.RegularExpressions.Regex(
            @"^llmserving_submit_stage_seconds_(bucket|sum|count)\{stage=""(\w+)""(?:,le=""([^""]+)"")?\} (\S+)$",
            System.Text.RegularExpressions.RegexOptions.Multiline);
        foreach (System.Text.RegularExpressions.Match m in pattern.Matches(text))
        {
            var stage = m.Groups[2].Value;
            var value = double.Parse(m.Groups[4].Value, System.Globalization.CultureInfo.InvariantCulture);
            var entry = result.GetValueOrDefault(stage);
            entry.Buckets ??= [];
            switch (m.Groups[1].Value)
            {
                case "count":
                    entry.Count = value;
                    break;
                case "sum":
                    entry.Sum = value;
                    break;
                default:
                    var le = m.Groups[3].Value == "+Inf" ? double.PositiveInfinity : double.Parse(m.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture);
                    entry.Buckets[le] = value;
                    break;
            }

            result[stage] = entry;
        }

        return result;
    }
}
