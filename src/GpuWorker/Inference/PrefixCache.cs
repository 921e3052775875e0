using LLama.Batched;
using LLama.Native;

namespace LlmServing.GpuWorker.Inference;

/// <summary>
/// Prompts kept in the KV cache after their prefill, so that a later request sharing a token prefix with one (a system
/// prompt, instructions, few-shot examples) starts from a copy of it (<see cref="Conversation.Fork"/>, which shares the
/// cells) and prefills only the rest. Entries are whole prompts; a request uses the longest common prefix with any
/// entry, and a fork cut back to that length (KV positions beyond it removed from the fork only). Least recently used
/// entries go first, and only entries no running sequence shares, so an eviction always frees cells. Owned by the
/// scheduler loop: not thread-safe.
/// </summary>
internal sealed class PrefixCache(int maxEntries, int minTokens)
{
    private readonly List<CachedPrefix> _entries = [];
    private long _clock;

    public int MinTokens => minTokens;

    public int Count => _entries.Count;

    /// <summary>KV cells held by the entries (each counted once, however many sequences share them).</summary>
    public int Cells => _entries.Sum(e => e.Tokens.Length);

    /// <summary>Cells of the entries that running sequences share (eviction cannot free them).</summary>
    public int SharedCells => _entries.Where(e => e.Dependents > 0).Sum(e => e.Tokens.Length);

    /// <summary>The entry sharing the longest prefix with <paramref name="tokens"/>, at least <see cref="MinTokens"/> long, leaving one token to prompt.</summary>
    public (CachedPrefix? Entry, int Length) Find(ReadOnlySpan<LLamaToken> tokens)
    {
        CachedPrefix? best = null;
        var bestLength = 0;
        foreach (var entry in _entries)
        {
            var length = Math.Min(CommonPrefix(entry.Tokens, tokens), tokens.Length - 1);
            if (length > bestLength)
            {
                (best, bestLength) = (entry, length);
            }
        }

        return bestLength >= minTokens ? (best, bestLength) : (null, 0);
    }

    /// <summary>A new conversation holding the first <paramref name="length"/> tokens of the entry, ready to be prompted.</summary>
    public Conversation Start(CachedPrefix entry, int length)
    {
        entry.LastUsed = ++_clock;
        var conversation = entry.Conversation.Fork();
        if (length < entry.Tokens.Length)
        {
            conversation.Modify((end, kv) =>
            {
                kv.Remove(length, end.Value - length);
                return length;
            });
        }

        return conversation;
    }

    /// <summary>
    /// Keeps the prompt of a sequence whose prefill just finished (call before it samples: the fork must copy the
    /// prompt only). Returns the entry, or null when nothing could be evicted to make room.
    /// </summary>
    public CachedPrefix? Add(Conversation prefilled, LLamaToken[] prompt)
    {
        if (_entries.Count >= maxEntries && !EvictOne())
        {
            return null;
        }

        var entry = new CachedPrefix(prefilled.Fork(), prompt) { LastUsed = ++_clock };
        _entries.Add(entry);
        return entry;
    }

    /// <summary>Evicts the least recently used entry no running sequence shares; false when there is none.</summary>
    public bool EvictOne()
    {
        var victim = _entries.Where(e => e.Dependents == 0).MinBy(e => e.LastUsed);
        if (victim is null)
        {
            return false;
        }

        _entries.Remove(victim);
        victim.Conversation.Dispose();
        return true;
    }

    /// <summary>Drops every entry (the executor is being rebuilt or disposed).</summary>
    public void Clear()
    {
        foreach (var entry in _entries)
        {
            entry.Conversation.Dispose();
        }

        _entries.Clear();
    }

    public static int CommonPrefix(ReadOnlySpan<LLamaToken> a, ReadOnlySpan<LLamaToken> b)
    {
        var n = Math.Min(a.Length, b.Length);
        var i = 0;
        while (i < n && (int)a[i] == (int)b[i])
        {
            i++;
        }

        return i;
    }
}

/// <summary>A prompt kept in the KV cache; <see cref="Dependents"/> counts the running sequences sharing its cells.</summary>
internal sealed class CachedPrefix(Conversation conversation, LLamaToken[] tokens)
{
    public Conversation Conversation { get; } = conversation;

    public LLamaToken[] Tokens { get; } = tokens;

    public long LastUsed { get; set; }

    public int Dependents { get; set; }
}
