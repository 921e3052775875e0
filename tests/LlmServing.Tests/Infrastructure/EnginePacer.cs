using System.Collections.Concurrent;
using LlmServing.GpuWorker.Inference;
using Microsoft.Extensions.DependencyInjection;

namespace LlmServing.Tests.Infrastructure;

/// <summary>
/// Paces the real engine from a test (registered by the test host through <see cref="Register"/>, never by the worker
/// itself): a test that acts "while the job runs" holds the job in the engine until it has acted, and a test that needs
/// text "in pieces" slows the steps of its job to a set rate. What the test asserts then no longer depends on how fast
/// the machine decodes.
/// </summary>
public sealed class EnginePacer : IDecodeStepHook
{
    /// <summary>A hold that was never released lets the engine go after this long (the test has failed by then).</summary>
    private static readonly TimeSpan Safety = TimeSpan.FromMinutes(2);

    private readonly ConcurrentDictionary<Hold, byte> _holds = new();
    private readonly ConcurrentDictionary<Pace, byte> _paces = new();

    public Action<IServiceCollection> Register => services => services.AddSingleton<IDecodeStepHook>(this);

    /// <summary>True for a request whose prompt or message text contains <paramref name="marker"/>.</summary>
    public static Func<GenerationRequest, bool> Containing(string marker) => r =>
        r.Prompt?.Contains(marker, StringComparison.Ordinal) == true
        || r.Messages?.Any(m => m.Content.Contains(marker, StringComparison.Ordinal)) == true;

    /// <summary>
    /// Holds every decode step once a request matching <paramref name="match"/> has generated
    /// <paramref name="afterTokens"/> tokens, until <see cref="Hold.Release"/> or until that request is cancelled
    /// (so a cancel sent while it is held ends it at the next step, as it would mid-generation).
    /// </summary>
    /// <param name="afterJobs">Holds only once this many distinct matching jobs have entered the engine (with two slots,
    /// the fifth to enter means at least three have ended).</param>
    public Hold HoldWhen(Func<GenerationRequest, bool> match, int afterTokens = 0, int afterJobs = 1)
    {
        var hold = new Hold(this, match, afterTokens, afterJobs);
        _holds[hold] = 0;
        return hold;
    }

    public Hold HoldWhen(string marker, int afterTokens = 0, int afterJobs = 1) => HoldWhen(Containing(marker), afterTokens, afterJobs);

    /// <summary>While a request matching <paramref name="match"/> runs, every decode step takes at least <paramref name="step"/>.</summary>
    public IDisposable Slow(Func<GenerationRequest, bool> match, TimeSpan step)
    {
        var pace = new Pace(this, match, step);
        _paces[pace] = 0;
        return pace;
    }

    public IDisposable Slow(string marker, TimeSpan step) => Slow(Containing(marker), step);

    private readonly ConcurrentDictionary<Watch, byte> _watches = new();

    /// <summary>
    /// Completes once a decode step is about to run the sequences <paramref name="condition"/> asks for (for example,
    /// three jobs at once); fails the test after <paramref name="seconds"/>.
    /// </summary>
    public async Task WaitForStepAsync(Func<IReadOnlyList<IRunningSequence>, bool> condition, int seconds = 60)
    {
        var watch = new Watch(condition);
        _watches[watch] = 0;
        try
        {
            var done = await Task.WhenAny(watch.Seen.Task, Task.Delay(TimeSpan.FromSeconds(seconds)));
            Assert.That(done, Is.SameAs(watch.Seen.Task), "no decode step ran the sequences the test waited for");
        }
        finally
        {
            _watches.TryRemove(watch, out _);
        }
    }

    /// <summary>Waits until a step runs at least <paramref name="count"/> sequences matching <paramref name="match"/>.</summary>
    public Task WaitForStepAsync(Func<GenerationRequest, bool> match, int count, int seconds = 60) =>
        WaitForStepAsync(sequences => sequences.Count(s => match(s.Request)) >= count, seconds);

    public async ValueTask<bool> BeforeStepAsync(IReadOnlyList<IRunningSequence> sequences, CancellationToken ct)
    {
        foreach (var watch in _watches.Keys)
        {
            if (watch.Condition(sequences))
            {
                watch.Seen.TrySetResult();
            }
        }

        var delay = TimeSpan.Zero;
        foreach (var pace in _paces.Keys)
        {
            if (sequences.Any(s => pace.Match(s.Request)) && pace.Step > delay)
            {
                delay = pace.Step;
            }
        }

        if (delay > TimeSpan.Zero)
        {
            await Task.Delay(delay, ct);
        }

        if (HoldsAny(sequences))
        {
            await Task.Delay(5, ct);
            return false;
        }

        return true;
    }

    private bool HoldsAny(IReadOnlyList<IRunningSequence> sequences)
    {
        var holding = false;
        foreach (var hold in _holds.Keys)
        {
            foreach (var s in sequences)
            {
                if (hold.Match(s.Request))
                {
                    hold.Jobs.Add(s.Request.JobId);
                }
            }

            if (hold.Jobs.Count < hold.AfterJobs)
            {
                continue;
            }

            foreach (var s in sequences)
            {
                if (hold.Match(s.Request) && s.Generated >= hold.AfterTokens)
                {
                    hold.Reach(s.Request.JobId);
                    holding |= !s.Stopping && !hold.Expired;
                }
            }
        }

        return holding;
    }

    /// <summary>One hold of <see cref="HoldWhen(Func{GenerationRequest, bool}, int)"/>.</summary>
    public sealed class Hold : IDisposable
    {
        private readonly EnginePacer _pacer;
        private readonly TaskCompletionSource<Guid> _reached = new(TaskCreationOptions.RunContinuationsAsynchronously);

        internal Hold(EnginePacer pacer, Func<GenerationRequest, bool> match, int afterTokens, int afterJobs)
        {
            _pacer = pacer;
            Match = match;
            AfterTokens = afterTokens;
            AfterJobs = afterJobs;
        }

        internal int AfterJobs { get; }

        /// <summary>Distinct matching jobs seen in the engine (touched by the scheduler loop only).</summary>
        internal HashSet<Guid> Jobs { get; } = [];

        internal Func<GenerationRequest, bool> Match { get; }

        internal int AfterTokens { get; }

        /// <summary>Completes with the job's id once the job is in the engine and held there.</summary>
        public Task<Guid> Reached => _reached.Task;

        /// <summary>Waits until the job is held, failing the test after <paramref name="seconds"/>.</summary>
        public async Task<Guid> WaitReachedAsync(int seconds = 60)
        {
            var done = await Task.WhenAny(Reached, Task.Delay(TimeSpan.FromSeconds(seconds)));
            Assert.That(done, Is.SameAs(Reached), "the job did not reach the engine in time");
            return await Reached;
        }

        internal void Reach(Guid jobId)
        {
            if (_reached.TrySetResult(jobId))
            {
                _reachedAt = DateTime.UtcNow;
            }
        }

        private DateTime _reachedAt = DateTime.MaxValue;

        internal bool Expired => DateTime.UtcNow - _reachedAt > Safety;

        public void Release() => _pacer._holds.TryRemove(this, out _);

        public void Dispose() => Release();
    }

    private sealed class Watch(Func<IReadOnlyList<IRunningSequence>, bool> condition)
    {
        public Func<IReadOnlyList<IRunningSequence>, bool> Condition { get; } = condition;

        public TaskCompletionSource Seen { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed class Pace(EnginePacer pacer, Func<GenerationRequest, bool> match, TimeSpan step) : IDisposable
    {
        public Func<GenerationRequest, bool> Match { get; } = match;

        public TimeSpan Step { get; } = step;

        public void Dispose() => pacer._paces.TryRemove(this, out _);
    }
}
