using System.Diagnostics;

namespace LlmServing.Benchmarks;

/// <summary>
/// CPU time spent by each party of a benchmark step, read from <c>/proc</c> (Linux only): this process (harness, load
/// client, Producer and worker hosts), PostgreSQL (every <c>postgres</c> process, plus what the postmaster reaped from
/// backends that ended during the step) and RabbitMQ (<c>beam.smp</c>). With it a step's cost per job can be split
/// between the servers and our code, and the best rate the servers alone would allow can be computed.
/// </summary>
public sealed record CpuSample(double Self, double Postgres, double RabbitMq)
{
    private const double TicksPerSecond = 100; // USER_HZ on Linux

    public static CpuSample Take()
    {
        double postgres = 0, rabbit = 0;
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out _))
            {
                continue;
            }

            string stat;
            try
            {
                stat = File.ReadAllText(Path.Combine(dir, "stat"));
            }
            catch (IOException)
            {
                continue; // ended meanwhile
            }
            catch (UnauthorizedAccessException)
            {
                continue;
            }

            // pid (comm) state ppid ... field 14 utime, 15 stime, 16 cutime, 17 cstime (1-based, after the comm).
            var close = stat.LastIndexOf(')');
            var comm = stat[(stat.IndexOf('(') + 1)..close];
            var fields = stat[(close + 2)..].Split(' ');
            var own = (double.Parse(fields[11]) + double.Parse(fields[12])) / TicksPerSecond;
            var reaped = (double.Parse(fields[13]) + double.Parse(fields[14])) / TicksPerSecond;
            if (comm == "postgres")
            {
                // Backends that exited are added to their parent (the postmaster) when reaped.
                postgres += own + reaped;
            }
            else if (comm == "beam.smp")
            {
                rabbit += own;
            }
        }

        return new CpuSample(Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds, postgres, rabbit);
    }

    public static CpuSample operator -(CpuSample after, CpuSample before) =>
        new(after.Self - before.Self, after.Postgres - before.Postgres, after.RabbitMq - before.RabbitMq);

    /// <summary>Milliseconds of CPU per job: this process, PostgreSQL, RabbitMQ.</summary>
    public (double Self, double Postgres, double RabbitMq) PerJobMs(int jobs) =>
        (Self * 1000 / jobs, Postgres * 1000 / jobs, RabbitMq * 1000 / jobs);

    /// <summary>The rate at which the servers alone would fill every core (our own code costing nothing).</summary>
    public double ServersBoundJobsPerSecond(int jobs) => jobs * Environment.ProcessorCount / (Postgres + RabbitMq);
}
