namespace LlmServing.ModelGen;

/// <summary>
/// A byte-level SentencePiece (llama "SPM") vocabulary: <c>&lt;unk&gt;</c>, <c>&lt;s&gt;</c>, <c>&lt;/s&gt;</c>,
/// the 256 byte tokens (without them llama.cpp aborts the process on an unknown character), then word pieces.
/// Every multi-character piece has all its prefixes in the vocabulary too, so SPM's pairwise merges reach it.
/// </summary>
public static class SpmVocabulary
{
    public const int UnknownId = 0;
    public const int BosId = 1;
    public const int EosId = 2;
    public const int FirstByteId = 3;

    // llama.cpp token types.
    private const int Normal = 1;
    private const int Unknown = 2;
    private const int Control = 3;
    private const int Byte = 6;

    private const string Space = "\u2581";

    private static readonly string[] Words =
    [
        "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "on", "be", "at", "by",
        "this", "had", "not", "are", "but", "from", "or", "have", "an", "they", "which", "one", "you", "were",
        "her", "all", "she", "there", "would", "their", "we", "him", "been", "has", "when", "who", "will", "more",
        "no", "if", "out", "so", "said", "what", "up", "its", "about", "into", "than", "them", "can", "only",
        "other", "new", "some", "could", "time", "these", "two", "may", "then", "do", "first", "any", "my", "now",
        "such", "like", "our", "over", "man", "me", "even", "most", "made", "after", "also", "did", "many",
        "before", "must", "through", "back", "years", "where", "much", "your", "way", "well", "down", "should",
        "because", "each", "just", "those", "people", "how", "too", "little", "state", "good", "very", "make",
        "world", "still", "own", "see", "men", "work", "long", "get", "here", "between", "both", "life", "being",
        "under", "never", "day", "same", "another", "know", "while", "last", "might", "us", "great", "old",
        "year", "off", "come", "since", "against", "go", "came", "right", "used", "take", "three", "hello",
        "model", "token", "queue", "worker", "job", "batch", "result", "summary", "answer", "question",
    ];

    /// <summary>
    /// Builds a vocabulary of exactly <paramref name="size"/> tokens (at least 512). <paramref name="controlTokens"/>
    /// (e.g. a chat template's markers) take the last ids.
    /// </summary>
    public static (List<string> Tokens, List<float> Scores, List<int> Types) Build(int size, IReadOnlyList<string>? controlTokens = null)
    {
        controlTokens ??= [];
        if (size < 512)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "The vocabulary needs at least 512 tokens.");
        }

        var tokens = new List<string> { "<unk>", "<s>", "</s>" };
        var types = new List<int> { Unknown, Control, Control };
        for (var b = 0; b < 256; b++)
        {
            tokens.Add($"<0x{b:X2}>");
            types.Add(Byte);
        }

        var seen = new HashSet<string>(tokens, StringComparer.Ordinal);
        var pieces = new List<string>();
        void Piece(string p)
        {
            if (seen.Add(p))
            {
                pieces.Add(p);
            }
        }

        Piece(Space);
        const string letters = "abcdefghijklmnopqrstuvwxyz";
        foreach (var c in letters + letters.ToUpperInvariant() + "0123456789.,;:!?'\"-()[]{}/\\@#$%&*+=<>_|~`^")
        {
            Piece(c.ToString());
            Piece(Space + c);
        }

        foreach (var word in Words)
        {
            for (var n = 1; n <= word.Length; n++)
            {
                Piece(Space + word[..n]);
                Piece(word[..n]);
            }
        }

        // Fill up with letter pairs and triples (and their word-initial forms) until the requested size.
        IEnumerable<string> Fill()
        {
            foreach (var a in letters)
            {
                foreach (var b in letters)
                {
                    yield return $"{a}{b}";
                    yield return $"{Space}{a}{b}";
                }
            }

            foreach (var a in letters)
            {
                foreach (var b in letters)
                {
                    foreach (var c in letters)
                    {
                        yield return $"{a}{b}{c}";
                        yield return $"{Space}{a}{b}{c}";
                    }
                }
            }
        }

        var room = size - controlTokens.Count;
        using var filler = Fill().GetEnumerator();
        while (tokens.Count + pieces.Count < room && filler.MoveNext())
        {
            Piece(filler.Current);
        }

        if (tokens.Count + pieces.Count > room)
        {
            pieces.RemoveRange(room - tokens.Count, pieces.Count - (room - tokens.Count));
        }

        // Longer pieces score higher, so SPM prefers merging into whole words.
        var scores = Enumerable.Repeat(0f, tokens.Count).ToList();
        for (var i = 0; i < pieces.Count; i++)
        {
            tokens.Add(pieces[i]);
            types.Add(Normal);
            scores.Add(pieces[i].Length - (i * 1e-5f));
        }

        foreach (var control in controlTokens)
        {
            tokens.Add(control);
            types.Add(Control);
            scores.Add(0f);
        }

        return (tokens, scores, types);
    }
}
