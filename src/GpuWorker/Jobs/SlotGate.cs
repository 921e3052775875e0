namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// As many places as the scheduler has sequence slots. A consumer takes a place before it claims its job, so a job is
/// claimed (<c>running</c>, one more attempt) only when it can start at once, not while it waits unacknowledged
/// behind other work; a freed place goes to a waiting interactive job before any batch line. Pure logic, no engine.
/// </summary>
public sealed class SlotGate
{
    private readonly Lock _lock = new();
    private readonly LinkedList<TaskCompletionSource<IDisposable>> _interactive = new();
    private readonly LinkedList<TaskCompletionSource<IDisposable>> _batch = new();
    private int _free;

    public SlotGate(int slots)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
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

    /// <summary>Waits for a place; dispose the result to give it back.</summary>
    public Task<IDisposable> EnterAsync(bool interactive, CancellationToken ct)
    {
        TaskCompletionSource<IDisposable> waiter;
        LinkedListNode<TaskCompletionSource<IDisposable>> node;
        lock (_lock)
        {
            if (_free > 0 && (interactive ? _interactive.Count == 0 : _interactive.Count == 0 && _batch.Count == 0))
            {
                _free--;
                return Task.FromResult<IDisposable>(new Place(this));
            }

            waiter = new TaskCompletionSource<IDisposable>(TaskCreationOptions.RunContinuationsAsynchronously);
            node = (interactive ? _interactive : _batch).AddLast(waiter);
        }

        if (ct.CanBeCanceled)
        {
            var registration = ct.Register(() =>
            {
                lock (_lock)
                {
                    if (node.List is null)
                    {
                        return; // already granted
                    }

                    node.List.Remove(node);
                }

                waiter.TrySetCanceled(ct);
            });
            waiter.Task.ContinueWith(_ => registration.Dispose(), TaskScheduler.Default);
        }

        return waiter.Task;
    }

    private void Leave()
    {
        TaskCompletionSource<IDisposable>? next;
        lock (_lock)
        {
            var list = _interactive.Count > 0 ? _interactive : _batch.Count > 0 ? _batch : null;
            if (list is null)
            {
                _free++;
                return;
            }

            next = list.First!.Value;
            list.RemoveFirst(); // the place passes straight to the next waiter
        }

        next.TrySetResult(new Place(this));
    }

    private sealed class Place(SlotGate gate) : IDisposable
    {
        private int _left;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _left, 1) == 0)
            {
                gate.Leave();
            }
        }
    }
}
