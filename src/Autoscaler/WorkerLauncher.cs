using System.Diagnostics;
using Microsoft.Extensions.Options;

namespace LlmServing.Autoscaler;

/// <summary>
/// Hears what happens to worker processes: registered by whoever needs it (benchmarks, tests, a supervisor), never
/// needed by the launcher itself. Called on the launcher's and the processes' output threads: keep it quick.
/// </summary>
public interface IWorkerProcessObserver
{
    void Started(int processId, DateTimeOffset at);

    void Output(int processId, string line);

    void Exited(int processId, int exitCode, DateTimeOffset at);
}

/// <summary>Starts worker processes and keeps track of the ones still running. It never stops one.</summary>
public sealed class WorkerLauncher(IOptions<AutoscalerOptions> options, IEnumerable<IWorkerProcessObserver> observers, ILogger<WorkerLauncher> logger)
    : IDisposable
{
    private readonly List<(Process Process, string? Gpu)> _running = [];
    private readonly Lock _lock = new();
    private readonly IWorkerProcessObserver[] _observers = [.. observers];

    /// <summary>Worker processes started so far.</summary>
    public int Started { get; private set; }

    public int Running
    {
        get
        {
            lock (_lock)
            {
                Reap();
                return _running.Count;
            }
        }
    }

    public void Start()
    {
        var o = options.Value;
        lock (_lock)
        {
            Reap();
            var gpu = o.Gpus.FirstOrDefault(g => _running.All(r => r.Gpu != g));
            var start = new ProcessStartInfo(o.WorkerCommand, o.WorkerArguments)
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            foreach (var (key, value) in o.WorkerEnvironment)
            {
                start.Environment[key] = value;
            }

            start.Environment["Worker__IdleTimeout"] = o.WorkerIdleTimeout.ToString();
            if (gpu is not null)
            {
                start.Environment["CUDA_VISIBLE_DEVICES"] = gpu;
            }

            var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {o.WorkerCommand}.");
            var startedAt = DateTimeOffset.UtcNow;
            foreach (var observer in _observers)
            {
                observer.Started(process.Id, startedAt);
            }

            process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null)
                {
                    return;
                }

                foreach (var observer in _observers)
                {
                    observer.Output(process.Id, e.Data);
                }

                logger.LogDebug("worker {Pid}: {Line}", process.Id, e.Data);
            };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) logger.LogDebug("worker {Pid}: {Line}", process.Id, e.Data); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            _running.Add((process, gpu));
            Started++;
            logger.LogInformation("Started worker process {Pid}{Gpu}", process.Id, gpu is null ? "" : $" on GPU {gpu}");
        }
    }

    private void Reap()
    {
        foreach (var (process, _) in _running.Where(r => r.Process.HasExited).ToList())
        {
            logger.LogInformation("Worker process {Pid} exited with code {Code}", process.Id, process.ExitCode);
            var exitedAt = DateTimeOffset.UtcNow;
            foreach (var observer in _observers)
            {
                observer.Exited(process.Id, process.ExitCode, exitedAt);
            }

            _running.RemoveAll(r => r.Process == process);
            process.Dispose();
        }
    }

    /// <summary>On shutdown of the autoscaler, workers are asked to stop gracefully (SIGTERM), not killed.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var (process, _) in _running)
            {
                if (!process.HasExited)
                {
                    Process.Start("kill", ["-TERM", process.Id.ToString()])?.WaitForExit();
                    process.WaitForExit(TimeSpan.FromSeconds(30));
                }

                process.Dispose();
            }

            _running.Clear();
        }
    }
}
