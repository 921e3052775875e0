using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using LLama;
using LLama.Common;
using LlmServing.Benchmarks;
using LlmServing.GpuWorker.Inference;
using LlmServing.ModelGen;
using Microsoft.Extensions.DependencyInjection;

// dotnet run -c Release --project src/Benchmarks -- [--quick] [--model PATH] [--out docs/benchmarks.md]
//   [--slots 1,2,4,8,16,32] [--prompt-tokens 32] [--new-tokens 64] [--plumbing-jobs 3000] [--threads N]
//   [--skip engine,e2e,mixed,prefix,structured,plumbing,ingestion,waiters,coldstart] [--prefix-jobs-off N]   (LLMSERVING_BENCH_TRACE=1 prints every end-to-end job's timeline)
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
var options = new Dictionary<string, string>();
for (var i = 0; i < args.Length; i++)
{
    var key = args[i].TrimStart('-');
    options[key] = key == "quick" ? "true" : args[++i];
}

// llama.cpp's load log would bury the table; errors still show.
LLama.Native.NativeLogConfig.llama_log_set((level, message) =>
{
    if (level == LLama.Native.LLamaLogLevel.Error)
    {
        Console.Error.Write(message);
    }
});
var quick = options.ContainsKey("quick");
var slots = (options.GetValueOrDefault("slots") ?? (quick ? "1,4,16" : "1,2,4,8,16,32")).Split(',').Select(int.Parse).ToArray();
var promptTokens = int.Parse(options.GetValueOrDefault("prompt-tokens") ?? "32");
var newTokens = int.Parse(options.GetValueOrDefault("new-tokens") ?? "64");
var rounds = quick ? 1 : 2;
var mixedJobs = quick ? 16 : 48;
var plumbingJobs = int.Parse(options.GetValueOrDefault("plumbing-jobs") ?? (quick ? "600" : "3000"));
var skip = (options.GetValueOrDefault("skip") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
var output = options.GetValueOrDefault("out") ?? "docs/benchmarks.md";
var threads = int.Parse(options.GetValueOrDefault("threads") ?? Environment.ProcessorCount.ToString());
var shape = ModelShape.Small;
var modelPath = options.GetValueOrDefault("model") ?? RandomLlamaModel.EnsureExists("models/random-small.gguf", shape);

var cpu = File.Exists("/proc/cpuinfo")
    ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim()
    : null;
var machine = $"{cpu ?? RuntimeInformation.ProcessArchitecture.ToString()}, {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, .NET {Environment.Version}";
Console.WriteLine($"LlmServing benchmarks, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
Console.WriteLine($"machine: {machine}");
Console.WriteLine($"model: {modelPath}");

var report = new Report(machine, modelPath, $"prompt {promptTokens} tokens, {newTokens} new tokens, greedy, ignore_eos, threads {threads}");
await using var services = await BenchServices.CreateAsync();

// 1. Engine ceiling.
var engine = new Dictionary<int, double>();
using (var weights = LLamaWeights.LoadFromFile(new ModelParams(modelPath) { Threads = threads }))
{
    report.ModelDescription = $"{weights.Metadata.GetValueOrDefault("general.name", "?")}: {weights.ParameterCount:N0} parameters, " +
                              $"embedding {weights.EmbeddingSize}, vocabulary {weights.Vocab.Count}, {new FileInfo(modelPath).Length / 1e6:F1} MB";
    Console.WriteLine(report.ModelDescription);
    if (!skip.Contains("engine"))
    {
        await EngineBenchmark.TokensPerSecondAsync(weights, modelPath, 1, promptTokens, 8, threads); // warm-up
        foreach (var n in slots)
        {
            engine[n] = await EngineBenchmark.TokensPerSecondAsync(weights, modelPath, n, promptTokens, newTokens, threads);
            Console.WriteLine($"engine      slots {n,3}: {engine[n],8:F1} tokens/s");
        }
    }
}

// 2. End to end: the same work over HTTP -> PostgreSQL -> RabbitMQ -> worker -> PostgreSQL.
var endToEnd = new Dictionary<int, EndToEndResult>();
if (!skip.Contains("e2e"))
{
    foreach (var n in slots)
    {
        var context = Math.Max(256, n * (promptTokens + newTokens + 8));
        await using var stack = await BenchStack.StartAsync(services, new()
        {
            ["Inference:ModelPath"] = Path.GetFullPath(modelPath),
            ["Inference:ContextSize"] = context.ToString(),
            ["Inference:Slots"] = n.ToString(),
            ["Inference:Threads"] = threads.ToString(),
            ["Producer:ContextSize"] = context.ToString(),
        });
        var body = new { prompt = Workload.PromptText(promptTokens), max_tokens = newTokens, temperature = 0, ignore_eos = true };
        await EndToEndBenchmark.RunAsync(stack, services.Postgres, [body]); // warm-up
        endToEnd[n] = await EndToEndBenchmark.RunAsync(stack, services.Postgres, Enumerable.Repeat<object>(body, n * rounds).ToList());
        var r = endToEnd[n];
        Console.WriteLine($"end to end  slots {n,3}: {r.TokensPerSecond,8:F1} tokens/s, {r.JobsPerSecond,6:F2} jobs/s, failed {r.Failed}" +
                          (engine.TryGetValue(n, out var e) ? $", {r.TokensPerSecond / e:F2}x engine" : ""));
        await services.DeleteQueueAsync(stack.Queue);
    }
}

// 3. Mixed lengths: continuous batching against static batches of the same size.
(double TokensPerSecond, double Seconds, long Tokens) continuous = default, staticBatches = default;
var random = new Random(11);
var lengths = Enumerable.Range(0, mixedJobs).Select(_ => random.Next(8, 257)).ToList();
if (!skip.Contains("mixed"))
{
    staticBatches = await MixedBenchmark.RunAsync(modelPath, SchedulingMode.Static, 8, promptTokens, lengths, threads);
    Console.WriteLine($"mixed static      : {staticBatches.TokensPerSecond,8:F1} tokens/s ({staticBatches.Tokens} tokens in {staticBatches.Seconds:F1} s)");
    continuous = await MixedBenchmark.RunAsync(modelPath, SchedulingMode.Continuous, 8, promptTokens, lengths, threads);
    Console.WriteLine($"mixed continuous  : {continuous.TokensPerSecond,8:F1} tokens/s ({continuous.Tokens} tokens in {continuous.Seconds:F1} s), " +
                      $"{continuous.TokensPerSecond / staticBatches.TokensPerSecond:F2}x static");
}

// 3a. Shared prefix: 1,000-token instruction + ~20 unique tokens, 8 new tokens, prefix reuse on and off.
if (!skip.Contains("prefix"))
{
    var jobsOn = quick ? 64 : 256;
    var jobsOff = int.Parse(options.GetValueOrDefault("prefix-jobs-off") ?? (quick ? "16" : "256"));
    var (on, off, share) = await PrefixBenchmark.RunAsync(modelPath, 8, 1000, jobsOn, jobsOff, 8, threads);
    report.Prefix = (on, off, share, jobsOn, jobsOff);
    Console.WriteLine($"shared prefix     : {on,8:F2} jobs/s with reuse ({jobsOn} jobs, {share:P0} of prompt tokens cached), {off,8:F2} without ({jobsOff} jobs), {on / off:F1}x");
}

// 3b. Structured output: sampling under a JSON schema's grammar against free sampling, 8 slots.
if (!skip.Contains("structured"))
{
    var (free, constrained, perJob) = await StructuredBenchmark.RunAsync(modelPath, 8, promptTokens, quick ? 16 : 48, threads);
    report.Structured = (free, constrained, perJob);
    Console.WriteLine($"structured output : {constrained,8:F1} tokens/s under the grammar, {free,8:F1} free ({perJob:F0} tokens a job), {constrained / free:F2}x");
}

// 4. Plumbing: an engine double answers at once; what is left is the API, PostgreSQL, RabbitMQ and the consumer.
EndToEndResult? plumbing = null, idle = null;
(double Claims, double Results) groupSizes = (double.NaN, double.NaN);
double raw = double.NaN;
CpuSample? plumbingCpu = null;
if (!skip.Contains("plumbing"))
{
    await using (var stack = await BenchStack.StartAsync(services, new() { ["Inference:Slots"] = "64" }, engineDouble: true))
    {
        var body = new { prompt = "plumbing", max_tokens = 16 };
        await EndToEndBenchmark.RunAsync(stack, services.Postgres, Enumerable.Repeat<object>(body, 200).ToList()); // warm-up
        var gcBefore = (GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2));
        var cpuBefore = CpuSample.Take();
        plumbing = await EndToEndBenchmark.RunAsync(stack, services.Postgres, Enumerable.Repeat<object>(body, plumbingJobs).ToList());
        plumbingCpu = CpuSample.Take() - cpuBefore;
        Console.WriteLine($"plumbing gc during the run: gen0 {GC.CollectionCount(0) - gcBefore.Item1}, gen1 {GC.CollectionCount(1) - gcBefore.Item2}, gen2 {GC.CollectionCount(2) - gcBefore.Item3}");
        Console.WriteLine($"plumbing end to end: {plumbing.JobsPerSecond,8:F0} jobs/s ({plumbingJobs} jobs, engine double), failed {plumbing.Failed}");
        var writes = stack.WorkerServices!.GetRequiredService<LlmServing.GpuWorker.Jobs.JobWrites>();
        groupSizes = (writes.Claims.Requests / (double)Math.Max(1, writes.Claims.Statements), writes.Results.Requests / (double)Math.Max(1, writes.Results.Statements));
        Console.WriteLine($"plumbing accept side: {plumbingJobs / plumbing.SubmitSeconds,8:F0} jobs/s answered; group commit: {groupSizes.Claims:F1} claims, {groupSizes.Results:F1} results per statement");

        for (var i = 0; i < (quick ? 50 : 200); i++)
        {
            var one = await EndToEndBenchmark.RunAsync(stack, services.Postgres, [body], concurrency: 1);
            idle = idle is null ? one : idle with
            {
                Jobs = idle.Jobs + 1,
                SubmitToRunningMs = [.. idle.SubmitToRunningMs.Concat(one.SubmitToRunningMs).Order()],
                SubmitToDoneMs = [.. idle.SubmitToDoneMs.Concat(one.SubmitToDoneMs).Order()],
            };
        }

        Console.WriteLine($"plumbing one at a time: submit->running p50 {EndToEndBenchmark.Percentile(idle!.SubmitToRunningMs, 50):F1} ms");
        await services.DeleteQueueAsync(stack.Queue);
    }

    var rawBefore = CpuSample.Take();
    raw = await RawPlumbingBenchmark.JobsPerSecondAsync(services, plumbingJobs, 32);
    var rawCpu = CpuSample.Take() - rawBefore;
    Console.WriteLine($"plumbing raw limit : {raw,8:F0} jobs/s (Npgsql + RabbitMQ.Client, confirms)");
    report.HttpFloor = await HttpFloorBenchmark.RunAsync(plumbingJobs * 3);
    Console.WriteLine($"plumbing http floor: {report.HttpFloor.Value.RequestsPerSecond,8:F0} requests/s, " +
                      $"{report.HttpFloor.Value.CpuMsPerRequest:F3} ms CPU per request (empty endpoint, same client)");
    report.PlumbingCpu = (plumbingCpu!, plumbingJobs, rawCpu, plumbingJobs);
    foreach (var (name, spent) in new[] { ("end to end", plumbingCpu!), ("raw", rawCpu) })
    {
        var (self, pg, mq) = spent.PerJobMs(plumbingJobs);
        Console.WriteLine($"plumbing cpu {name,-10}: {self:F3} ms this process, {pg:F3} PostgreSQL, {mq:F3} RabbitMQ per job; " +
                          $"servers alone would allow {spent.ServersBoundJobsPerSecond(plumbingJobs):F0} jobs/s");
    }
}

// 5. Batch ingestion: upload -> validate -> COPY -> every line published, at two file sizes.
var ingestion = new List<(int Lines, double LinesPerSecond, double Seconds, double PeakMegabytes)>();
if (!skip.Contains("ingestion"))
{
    foreach (var lines in quick ? new[] { 10_000 } : new[] { 10_000, 100_000 })
    {
        var (rate, seconds, peakMb) = await IngestionBenchmark.RunAsync(services, lines);
        ingestion.Add((lines, rate, seconds, peakMb));
        Console.WriteLine($"ingestion {lines,7} lines: {rate,8:F0} lines/s ({seconds:F1} s upload to every line eligible), peak +{peakMb:F0} MB");
    }
}

report.Ingestion = ingestion;
report.GroupSizes = groupSizes;

// 5b. Waiting for results: database commits/s with nobody waiting, 20 long-polls, 20 streams (no worker).
if (!skip.Contains("waiters"))
{
    var w = await WaitersBenchmark.RunAsync(services);
    report.Waiters = w;
    Console.WriteLine($"waiters: {w.IdleCommitsPerSecond:F0} commits/s idle, {w.LongPollCommitsPerSecond:F0} with {w.Waiters} long-polls, {w.StreamCommitsPerSecond:F0} with {w.Waiters} streams");
}

// 6. Cold start from zero workers through the local autoscaler, back to zero, and a burst.
if (!skip.Contains("coldstart"))
{
    var cold = await ColdStartBenchmark.RunAsync(services, modelPath, quick ? 200 : 1000);
    report.ColdStart = cold;
    Console.WriteLine($"cold start: process {cold.ToProcessStart:F2} s, model loaded {cold.ToModelLoaded:F2} s, job started {cold.ToJobStarted:F2} s, " +
                      $"result {cold.ToResult:F2} s after submit; back to zero {cold.ScaleToZero:F1} s after; burst of {cold.BurstJobs}: " +
                      $"{cold.BurstWorkersStarted} workers started (policy max {cold.BurstPolicyMax}) in {cold.BurstSeconds:F1} s");
}
Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
var markdown = report.Render(slots, engine, endToEnd, lengths, staticBatches, continuous, plumbing, idle, raw, output);
Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
await File.WriteAllTextAsync(output, markdown);
Console.WriteLine();
Console.WriteLine(markdown);
Console.WriteLine($"wrote {output} and {Path.ChangeExtension(output, ".png")}");
