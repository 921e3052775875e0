using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace LlmServing.Tests.Infrastructure;

/// <summary>A Producer or worker as its own process (built output of the solution), so that it can be SIGKILLed.</summary>
public sealed class AppProcess : IAsyncDisposable
{
    private readonly Process _process;

    private AppProcess(Process process) => _process = process;

    public bool HasExited => _process.HasExited;

    public static string Dll(string project, string assembly) => Path.GetFullPath(Path.Combine(
        TestContext.CurrentContext.TestDirectory, $"../../../../../src/{project}/bin/Debug/net10.0/{assembly}.dll"));

    /// <param name="dll">The built assembly to run.</param>
    /// <param name="environment">Settings over the connection strings of the run.</param>
    /// <param name="output">Receives each line the process writes (stdout and stderr), when given.</param>
    public static AppProcess Start(string dll, IDictionary<string, string> environment, Action<string>? output = null)
    {
        Assume.That(File.Exists(dll), Is.True, $"build the solution first: {dll}");
        var start = new ProcessStartInfo("dotnet", $"\"{dll}\"") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["ConnectionStrings__Postgres"] = TestServices.Postgres;
        start.Environment["ConnectionStrings__RabbitMq"] = TestServices.RabbitMq;
        foreach (var (key, value) in environment)
        {
            start.Environment[key] = value;
        }

        var process = Process.Start(start)!;
        process.OutputDataReceived += (_, e) => { if (e.Data is { } line) output?.Invoke(line); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is { } line) output?.Invoke(line); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return new AppProcess(process);
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Waits until a Producer answers its readiness check (it may still be starting, or restarting).</summary>
    public static Task WaitReadyAsync(HttpClient client, int timeoutSeconds) =>
        Eventually.WaitUntilAsync(async () =>
        {
            try
            {
                return (await client.GetAsync("/health/ready")).IsSuccessStatusCode;
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                return false;
            }
        }, timeoutSeconds, pollMilliseconds: 200);

    /// <summary>SIGKILL: no drain, no goodbye.</summary>
    public async Task KillAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        await _process.WaitForExitAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process.Dispose();
    }
}

/// <summary>Starts and stops the local servers (only where the test run manages them).</summary>
public static class LocalServers
{
    public static bool CanRestart => Environment.GetEnvironmentVariable("LLMSERVING_TEST_CAN_RESTART_SERVICES") == "1";

    public static async Task RunAsync(string command, string arguments)
    {
        using var process = Process.Start(new ProcessStartInfo(command, arguments) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true })!;
        await process.StandardOutput.ReadToEndAsync();
        await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
    }

    public static async Task<string> PostgresClusterAsync()
    {
        using var process = Process.Start(new ProcessStartInfo("bash", "-c \"ls /etc/postgresql | sort -V | tail -1\"") { UseShellExecute = false, RedirectStandardOutput = true })!;
        var version = (await process.StandardOutput.ReadToEndAsync()).Trim();
        await process.WaitForExitAsync();
        return $"{version} main";
    }
}
