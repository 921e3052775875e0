using LlmServing.ResultStore.Tenants;

namespace LlmServing.Producer.Application;

/// <summary>
/// Counts unknown API keys per client address in one-minute windows (per Producer replica). Once an address is over
/// the limit, its keys are checked against an in-memory snapshot of the active keys' hashes instead of the database:
/// an unknown key is refused without a lookup, an active one still works. The snapshot is read at most once every
/// <see cref="SnapshotAge"/> (one query however many requests arrive), so a key created on another replica a moment
/// ago may be refused from a blocked address for that long.
/// </summary>
public sealed class InvalidKeyLimiter(ApiKeyStore keys, TimeProvider clock) : IDisposable
{
    public const int PerMinute = 20;

    public static readonly TimeSpan SnapshotAge = TimeSpan.FromSeconds(10);

    private readonly System.Threading.RateLimiting.PartitionedRateLimiter<string> _limiter =
        System.Threading.RateLimiting.PartitionedRateLimiter.Create<string, string>(address =>
            System.Threading.RateLimiting.RateLimitPartition.GetFixedWindowLimiter(address, _ => new System.Threading.RateLimiting.FixedWindowRateLimiterOptions
            {
                PermitLimit = PerMinute,
                Window = TimeSpan.FromMinutes(1),
                QueueLimit = 0,
                AutoReplenishment = true,
            }));

    private readonly SemaphoreSlim _refresh = new(1, 1);
    private volatile Snapshot? _snapshot;

    private sealed record Snapshot(HashSet<string> Hashes, DateTimeOffset ReadAt);

    public bool IsBlocked(string address) => _limiter.GetStatistics(address)?.CurrentAvailablePermits <= 0;

    /// <summary>
    /// Whether <paramref name="key"/> from <paramref name="address"/> may be looked up in the database: always while
    /// the address is under the limit; once over it, only when the key is an active one.
    /// </summary>
    public async ValueTask<bool> MayLookUpAsync(string address, string key, CancellationToken ct)
    {
        if (!IsBlocked(address))
        {
            return true;
        }

        var snapshot = await CurrentAsync(ct);
        return snapshot.Hashes.Contains(ApiKeyStore.Hash(key));
    }

    public void Count(string address)
    {
        using var _ = _limiter.AttemptAcquire(address);
    }

    private async ValueTask<Snapshot> CurrentAsync(CancellationToken ct)
    {
        if (_snapshot is { } fresh && clock.GetUtcNow() - fresh.ReadAt < SnapshotAge)
        {
            return fresh;
        }

        await _refresh.WaitAsync(ct);
        try
        {
            if (_snapshot is { } other && clock.GetUtcNow() - other.ReadAt < SnapshotAge)
            {
                return other;
            }

            var hashes = await keys.ActiveHashesAsync(ct);
            return _snapshot = new Snapshot(hashes, clock.GetUtcNow());
        }
        finally
        {
            _refresh.Release();
        }
    }

    public void Dispose()
    {
        _limiter.Dispose();
        _refresh.Dispose();
    }
}
