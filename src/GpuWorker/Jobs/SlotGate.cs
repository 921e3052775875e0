namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// As many places as the scheduler has sequence slots, counted in sequences: a request for <c>n</c> choices takes
/// <c>n</c> places, as it takes <c>n</c> slots in the scheduler. A consumer takes its places before it claims its job,
/// so a job is claimed (<c>running</c>, one more attempt) only when it can start at once, not while it waits
/// unacknowledged behind other work; freed places go to waiting interactive jobs before any batch line, in arrival
/// order (a request for more places than are free waits, and those behind it wait too, so it is never starved).
/// Pure logic, no engine.
/// </summary>
public sealed class SlotGate
{
    private readonly Lock _lock = new();
    private readonly LinkedList<Waiter> _interactive = new();
    private readonly LinkedList<Waiter> _batch = new();
    private readonly int _slots;
    private int _free;

    public SlotGate(int slots)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        _slots = slots;
        _free = slots;
    }

    /// <summary>Places free now.</summary>
    public int Free
    {
        get
        {
            lock (_lock)
            {
                return _free;
            }
        }
    }

    /// <summary>Waits for one place; dispose the result to give it back.</summary>
    public Task<IDisposable> EnterAsync(bool interactive, CancellationToken ct) => EnterAsync(interactive, 1, ct);

    /// <summary>
    /// Waits for <paramref name="places"/> places (one per sequence the job will run); dispose the result to give them
    /// all back. A request for more places than the worker has takes all of them (the scheduler then refuses it with
    /// its reason, rather than the message waiting forever).
    /// </summary>
    public Task<IDisposable> EnterAsync(bool interactive, int places, CancellationToken ct)
    {
        places = Math.Clamp(places, 1, _slots);
        Waiter waiter;
        LinkedListNode<Waiter> node;
        lock (_lock)
        {
            if (_free >= places && (interactive ? _interactive.Count == 0 : _interactive.Count == 0 && _batch.Count == 0))
            {
                _free -= places;
                return Task.FromResult<IDisposable>(new Place(this, places));
            }

            waiter = new Waiter(places);
            node = (interactive ? _interactive : _batch).AddLast(waiter);
        }

        if (ct.CanBeCanceled)
        {
            var registration = ct.Register(() =>
            {
                List<(Waiter, int)> granted;
                lock (_lock)
                {
                    if (node.List is null)
                    {
                        return; // already granted
                    }

                    node.List.Remove(node);
                    granted = GrantLocked(); // the head may have been what held others back
                }

                waiter.Completion.TrySetCanceled(ct);
                Complete(granted);
            });
            waiter.Completion.Task.ContinueWith(_ => registration.Dispose(), TaskScheduler.Default);
        }

        return waiter.Completion.Task;
    }

    private void Leave(int places)
    {
        List<(Waiter, int)> granted;
        lock (_lock)
        {
            _free += places;
            granted = GrantLocked();
        }

        Complete(granted);
    }

    /// <summary>Grants waiters in order (interactive first) while the head of the line fits.</summary>
    private List<(Waiter, int)> GrantLocked()
    {
        var granted = new List<(Waiter, int)>();
        while ((_interactive.Count > 0 ? _interactive : _batch.Count > 0 ? _batch : null) is { } list
               && list.First!.Value.Places <= _free)
        {
            var next = list.First.Value;
            list.RemoveFirst();
            _free -= next.Places;
            granted.Add((next, next.Places));
        }

        return granted;
    }

    private void Complete(List<(Waiter Waiter, int Places)> granted)
    {
        foreach (var (waiter, places) in granted)
        {
            waiter.Completion.TrySetResult(new Place(this, places));
        }
    }

    private sealed class Waiter(int places)
    {
        public int Places { get; } = places;

        public TaskCompletionSource<IDisposable> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed class Place(SlotGate gate, int places) : IDisposable
    {
        private int _left;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _left, 1) == 0)
            {
                gate.Leave(places);
            }
        }
    }
}
