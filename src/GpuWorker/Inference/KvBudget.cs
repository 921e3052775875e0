namespace LlmServing.GpuWorker.Inference;

/// <summary>
/// The worker's KV cells as a budget: every active sequence reserves its prompt plus its <c>max_tokens</c> (cells it
/// shares with a cached prefix counted once, on the prefix), the cached prefixes hold theirs, and a request is
/// admitted only while everything fits the context (<see cref="AdmissionPolicy"/>), evicting unshared cached
/// prefixes when that makes room. Owned by the scheduler's loop, like the executor.
/// </summary>
internal sealed class KvBudget(int contextSize, PrefixCache? cache)
{
    public int ContextSize { get; } = contextSize;

    /// <summary>KV cells spoken for: every active sequence's own reservation plus the cached prefixes (shared cells once).</summary>
    public int Reserved(IReadOnlyCollection<ActiveSequence> active) => active.Sum(s => s.Reserved) + (cache?.Cells ?? 0);

    /// <summary>
    /// Whether a request of <paramref name="promptTokens"/> and <paramref name="maxTokens"/> (all its choices) starts
    /// now, waits for cells, or can never fit; and the cached prefix it starts from (given up when only an empty cache
    /// makes room).
    /// </summary>
    public (Admission Decision, (CachedPrefix? Entry, int Length) Hit) Fit(
        IReadOnlyCollection<ActiveSequence> active, int promptTokens, int maxTokens, (CachedPrefix? Entry, int Length) hit)
    {
        var decision = AdmissionPolicy.Decide(promptTokens, maxTokens, Reserved(active), active.Count, ContextSize);
        return decision == Admission.Reject ? (decision, hit) : FitWithCache(active, promptTokens, maxTokens, hit);
    }

    /// <summary>
    /// Admission against the KV budget with cached prefixes: cells shared with <paramref name="hit"/> are counted there;
    /// unshared prefixes are evicted (least recently used first) while the request does not fit and evicting could
    /// make it fit, even with nothing running. With nothing running and still no room, the hit is given up and the
    /// cache emptied, so an idle worker never waits on its own cache.
    /// </summary>
    private (Admission Decision, (CachedPrefix? Entry, int Length) Hit) FitWithCache(
        IReadOnlyCollection<ActiveSequence> active, int promptTokens, int maxTokens, (CachedPrefix? Entry, int Length) hit)
    {
        if (cache is null)
        {
            return (AdmissionPolicy.Decide(promptTokens, maxTokens, Reserved(active), active.Count, ContextSize), hit);
        }

        var own = promptTokens - hit.Length + maxTokens;
        if (hit.Entry is { } held)
        {
            held.Dependents++; // not a candidate for eviction while deciding
        }

        while (Reserved(active) + own > ContextSize && EvictionCouldHelp(active, own) && cache.EvictOne())
        {
        }

        if (hit.Entry is { } released)
        {
            released.Dependents--;
        }

        if (Reserved(active) + own <= ContextSize)
        {
            return (Admission.Admit, hit);
        }

        if (active.Count > 0)
        {
            return (Admission.Wait, hit);
        }

        while (cache.EvictOne())
        {
        }

        return (AdmissionPolicy.Decide(promptTokens, maxTokens, Reserved(active), 0, ContextSize), (null, 0));
    }

    /// <summary>Whether evicting every unshared cached prefix would make room for <paramref name="own"/> more cells.</summary>
    private bool EvictionCouldHelp(IReadOnlyCollection<ActiveSequence> active, int own) =>
        cache is not null && active.Sum(s => s.Reserved) + cache.SharedCells + own <= ContextSize;
}
