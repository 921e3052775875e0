using System.ComponentModel.DataAnnotations;

namespace LlmServing.ModelGen;

/// <summary>Shape of a generated llama-architecture model.</summary>
public sealed record ModelShape
{
    /// <summary>A few hundred thousand parameters: loads and decodes in milliseconds; the default for tests.</summary>
    public static ModelShape Tiny { get; } = new();

    /// <summary>About 34M parameters (f16), sized like a small real model; for benchmarks.</summary>
    public static ModelShape Small { get; } = new()
    {
        Embedding = 512, Layers = 8, FeedForward = 1408, Heads = 8, KvHeads = 8, Vocabulary = 8192,
    };

    [Range(16, 16384)] public int Embedding { get; init; } = 64;
    [Range(1, 256)] public int Layers { get; init; } = 2;
    [Range(16, 65536)] public int FeedForward { get; init; } = 192;
    [Range(1, 256)] public int Heads { get; init; } = 4;
    [Range(1, 256)] public int KvHeads { get; init; } = 4;
    [Range(512, 262144)] public int Vocabulary { get; init; } = 1024;
    [Range(64, 1 << 20)] public int ContextLength { get; init; } = 4096;
    public bool F16 { get; init; } = true;
    public int Seed { get; init; } = 1234;

    /// <summary>A GPT-2-style byte-level BPE vocabulary instead of SentencePiece (see <see cref="BpeVocabulary"/>).</summary>
    public bool Bpe { get; init; }

    /// <summary>Writes a ChatML chat template (<c>tokenizer.chat_template</c>) and its two control tokens.</summary>
    public bool ChatMl { get; init; }

    public int HeadDim => Embedding / Heads;

    public long ParameterCount =>
        (2L * Vocabulary * Embedding) + Embedding
        + (Layers * ((2L * Embedding) + (2L * Embedding * Embedding) + (2L * Embedding * HeadDim * KvHeads)
                     + (3L * Embedding * FeedForward)));
}
