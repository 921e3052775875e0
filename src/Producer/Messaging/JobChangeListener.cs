using System.Collections.Concurrent;
using Npgsql;

namespace LlmServing.Producer.Messaging;

/// <summary>
/// One PostgreSQL connection per Producer that LISTENs for changes of interactive jobs (the worker's streaming
/// progress and final states, raised by the <c>jobs_notify_progress</c> trigger) and wakes whoever waits on that job:
/// streams, synchronous completions and long-polls wait here instead of querying ten times a second. After a lost
/// connection it reconnects and wakes every waiter, so that none sleeps through a change it missed.
/// </summary>
public sealed class JobChangeListener(NpgsqlDataSource data, ILogger<JobChangeListener> logger) : BackgroundService
{
    public const string Channel = "llmserving_job_progress";

    private readonly ConcurrentDictionary<Guid, ConcurrentDictionary<Subscription, byte>> _waiters = new();

    /// <summary>Whether the LISTEN connection is up (waiters poll more often while it is not).</summary>
    public bool Listening { get; private set; }

    /// <summary>Starts watching a job; read the row after subscribing, so no change falls between.</summary>
    public Subscription Subscribe(Guid jobId)
    {
        var subscription = new Subscription(this, jobId);
        _waiters.GetOrAdd(jobId, _ => new()).TryAdd(subscription, 0);
        return subscription;
    }

    private void Unsubscribe(Subscription subscription)
    {
        if (_waiters.TryGetValue(subscription.JobId, out var set))
        {
            set.TryRemove(subscription, out _);
            if (set.IsEmpty)
            {
                _waiters.TryRemove(new KeyValuePair<Guid, ConcurrentDictionary<Subscription, byte>>(subscription.JobId, set));
            }
        }
    }

    private void Wake(Guid jobId)
    {
        if (_waiters.TryGetValue(jobId, out var set))
        {
            foreach (var s in set.Keys)
            {
                s.Signal();
            }
        }
    }

    private void WakeAll()
    {
        foreach (var set in _waiters.Values)
        {
            foreach (var s in set.Keys)
            {
                s.Signal();
            }
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await using var connection = await data.OpenConnectionAsync(stoppingToken);
                connection.Notification += (_, e) =>
                {
                    if (Guid.TryParse(e.Payload, out var id))
                    {
                        Wake(id);
                    }
                };
                await using (var listen = new NpgsqlCommand($"LISTEN {Channel}", connection))
                {
                    await listen.ExecuteNonQueryAsync(stoppingToken);
                }

                Listening = true;
                WakeAll(); // anything that changed while not listening
                while (!stoppingToken.IsCancellationRequested)
                {
                    await connection.WaitAsync(stoppingToken);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                logger.LogWarning("Listening for job changes failed ({Error}); waiters poll until it is back", e.Message);
            }
            finally
            {
                Listening = false;
                WakeAll();
            }

            await Task.Delay(TimeSpan.FromSeconds(1), stoppingToken).ContinueWith(_ => { }, TaskScheduler.Default);
        }
    }

    /// <summary>A watch on one job: <see cref="WaitAsync"/> returns at its next change, or after a timeout.</summary>
    public sealed class Subscription(JobChangeListener owner, Guid jobId) : IDisposable
    {
        private readonly SemaphoreSlim _changed = new(0);

        public Guid JobId => jobId;

        internal void Signal()
        {
            if (_changed.CurrentCount == 0)
            {
                _changed.Release();
            }
        }

        /// <summary>Waits for a change; returns false on timeout. While the listener is down, waits at most 100 ms.</summary>
        public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken ct) =>
            _changed.WaitAsync(owner.Listening ? timeout : TimeSpan.FromMilliseconds(Math.Min(100, timeout.TotalMilliseconds)), ct);

        // The semaphore is not disposed: a notification may still signal it; it holds no wait handle.
        public void Dispose() => owner.Unsubscribe(this);
    }
}
