using System.Text;

namespace LlmServing.ModelGen;

/// <summary>
/// A GPT-2-style byte-level BPE vocabulary (what Qwen 2.5 and Llama 3 use): the 256 byte tokens written with GPT-2's
/// byte-to-character map, merges building words (with the leading-space marker <c>Ġ</c>), a few multi-byte
/// characters (é, ü, 中, 🙂) reachable both whole and byte by byte, and the special token <c>&lt;|endoftext|&gt;</c>
/// (beginning and end of text). llama.cpp reads it with <c>tokenizer.ggml.model = "gpt2"</c> and the "gpt-2"
/// pre-tokenizer.
/// </summary>
public static class BpeVocabulary
{
    public const string EndOfText = "<|endoftext|>";

    private const int Normal = 1;
    private const int Control = 3;

    private static readonly string[] Words =
    [
        "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "on", "be", "at", "by", "this",
        "had", "not", "are", "but", "from", "or", "have", "an", "they", "which", "one", "you", "were", "her", "all",
        "she", "there", "would", "their", "we", "him", "been", "has", "when", "who", "will", "hello", "world", "model",
        "token", "queue", "worker", "job", "batch", "result", "answer", "question", "café", "über",
    ];

    private static readonly string[] Characters = ["é", "ü", "中", "🙂"];

    /// <summary>GPT-2's map from bytes to printable characters (so that every token is printable text).</summary>
    public static char[] ByteToChar { get; } = BuildByteMap();

    /// <summary>A vocabulary of exactly <paramref name="size"/> tokens (at least 512), its token types and merges.</summary>
    public static (List<string> Tokens, List<int> Types, List<string> Merges, int EndOfTextId) Build(int size)
    {
        if (size < 512)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "The vocabulary needs at least 512 tokens.");
        }

        var tokens = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var c in ByteToChar)
        {
            tokens.Add(c.ToString());
            seen.Add(c.ToString());
        }

        var merges = new List<string>();
        var room = size - 1; // the last id is <|endoftext|>
        void Merge(string left, string right)
        {
            var joined = left + right;
            if (tokens.Count < room && seen.Add(joined))
            {
                merges.Add($"{left} {right}");
                tokens.Add(joined);
            }
        }

        // A symbol sequence built left to right: every prefix is a token, each made by one merge.
        void Chain(string text)
        {
            var symbols = Encoding.UTF8.GetBytes(text).Select(b => ByteToChar[b].ToString()).ToList();
            var current = symbols[0];
            foreach (var next in symbols.Skip(1))
            {
                Merge(current, next);
                current += next;
            }
        }

        foreach (var character in Characters)
        {
            Chain(character);
        }

        foreach (var word in Words)
        {
            Chain(word);
            Chain(" " + word);
        }

        const string letters = "abcdefghijklmnopqrstuvwxyz";
        foreach (var a in letters)
        {
            Chain(" " + a);
            foreach (var b in letters)
            {
                Chain($"{a}{b}");
                Chain($" {a}{b}");
            }
        }

        var filler = 0;
        while (tokens.Count < room)
        {
            // Unreachable fillers keep the size exact without new merges (llama.cpp accepts tokens no merge makes).
            tokens.Add($"<|filler{filler++}|>");
        }

        var types = Enumerable.Repeat(Normal, tokens.Count).ToList();
        for (var i = 0; i < tokens.Count; i++)
        {
            if (tokens[i].StartsWith("<|filler", StringComparison.Ordinal))
            {
                types[i] = Control;
            }
        }

        tokens.Add(EndOfText);
        types.Add(Control);
        return (tokens, types, merges, tokens.Count - 1);
    }

    private static char[] BuildByteMap()
    {
        var map = new char[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)next++;
        }

        return map;
    }
}
