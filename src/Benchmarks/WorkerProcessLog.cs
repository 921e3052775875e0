using LlmServing.Autoscaler;

namespace LlmServing.Benchmarks;

/// <summary>The benchmark's record of worker processes: when each started, reported its model loaded (its log line), and exited.</summary>
public sealed class WorkerProcessLog : IWorkerProcessObserver
{
    private readonly Lock _lock = new();

    public List<DateTimeOffset> StartedAt { get; } = [];

    public List<DateTimeOffset> ModelLoadedAt { get; } = [];

    public List<DateTimeOffset> ExitedAt { get; } = [];

    public void Started(int processId, DateTimeOffset at)
    {
        lock (_lock)
        {
            StartedAt.Add(at);
        }
    }

    public void Output(int processId, string line)
    {
        if (Environment.GetEnvironmentVariable("LLMSERVING_BENCH_TRACE") == "1")
        {
            Console.WriteLine($"  worker {processId} {DateTimeOffset.UtcNow:HH:mm:ss.fff}: {line}");
        }

        if (line.Contains("Model loaded", StringComparison.Ordinal))
        {
            lock (_lock)
            {
                ModelLoadedAt.Add(DateTimeOffset.UtcNow);
            }
        }
    }

    public void Exited(int processId, int exitCode, DateTimeOffset at)
    {
        lock (_lock)
        {
            ExitedAt.Add(at);
        }
    }
}
