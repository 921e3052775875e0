using Npgsql;

namespace LlmServing.Benchmarks;

/// <summary>What waiting for results costs the database: commits/s with nobody waiting, with N long-polls, with N streams.</summary>
public sealed record WaitersResult(int Waiters, double IdleCommitsPerSecond, double LongPollCommitsPerSecond, double StreamCommitsPerSecond);

/// <summary>
/// N queued jobs and no worker, so nothing finishes and every waiter waits the whole window; PostgreSQL's own commit
/// counter (<c>pg_stat_database.xact_commit</c>) measured over the window with nobody waiting, with N
/// <c>GET /v1/jobs/{id}?wait=60</c> long-polls, and with N <c>GET /v1/jobs/{id}/stream</c> streams. Read-only queries
/// commit too, so the counter sees every query a waiter makes.
/// </summary>
public static class WaitersBenchmark
{
    public static async Task<WaitersResult> RunAsync(BenchServices services, int waiters = 20, double seconds = 5)
    {
        await using var stack = await BenchStack.StartAsync(services, new Dictionary<string, string?> { ["Producer:MaxWaitSeconds"] = "120" }, withWorker: false);
        var ids = new List<Guid>();
        for (var i = 0; i < waiters; i++)
        {
            using var response = await stack.Client.PostAsync("/v1/jobs",
                new StringContent("{\"prompt\": \"wait for me\", \"max_tokens\": 4}", System.Text.Encoding.UTF8, "application/json"));
            var body = System.Text.Json.Nodes.JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            ids.Add(Guid.Parse(body["id"]!.GetValue<string>()));
        }

        await Task.Delay(2000); // the stack settles
        var idle = await CommitsPerSecondAsync(services, seconds);

        using var polls = new CancellationTokenSource();
        var pollTasks = ids.Select(id => Swallow(stack.Client.GetStringAsync($"/v1/jobs/{id}?wait=60", polls.Token))).ToList();
        await Task.Delay(1000);
        var longPoll = await CommitsPerSecondAsync(services, seconds);
        await polls.CancelAsync();
        await Task.WhenAll(pollTasks);

        using var streams = new CancellationTokenSource();
        var streamTasks = ids.Select(id => Swallow(stack.Client.GetStringAsync($"/v1/jobs/{id}/stream", streams.Token))).ToList();
        await Task.Delay(1000);
        var stream = await CommitsPerSecondAsync(services, seconds);
        await streams.CancelAsync();
        await Task.WhenAll(streamTasks);
        return new WaitersResult(waiters, idle, longPoll, stream);
    }

    private static async Task Swallow(Task task)
    {
        try
        {
            await task;
        }
        catch (Exception e) when (e is OperationCanceledException or HttpRequestException)
        {
        }
    }

    private static async Task<double> CommitsPerSecondAsync(BenchServices services, double seconds)
    {
        await using var db = new NpgsqlConnection(services.Postgres);
        await db.OpenAsync();
        async Task<long> Commits()
        {
            await using var command = new NpgsqlCommand("SELECT pg_stat_clear_snapshot(); SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()", db);
            await using var reader = await command.ExecuteReaderAsync();
            await reader.NextResultAsync();
            await reader.ReadAsync();
            return reader.GetInt64(0);
        }

        var before = await Commits();
        await Task.Delay(TimeSpan.FromSeconds(seconds));
        var after = await Commits();
        return (after - before - 1) / seconds; // less this probe's own commit
    }
}
