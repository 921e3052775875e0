using System.Buffers;
using LLama.Native;
using LLama.Sampling;
using LlamaGrammar = LLama.Sampling.Grammar;

namespace LlmServing.GpuWorker.Inference;

/// <summary>The sequence was cancelled or ran out of time while its next token was being checked against its grammar.</summary>
public sealed class SamplingInterruptedException() : Exception("Sampling was interrupted: the sequence is cancelled or over its time limit.");

/// <summary>
/// LLamaSharp's <see cref="DefaultSamplingPipeline"/> under a grammar (the same sampler chain, the same shortcuts: the
/// token the chain picks is checked alone first, then the top K), except for the slow path. There LLamaSharp hands the
/// whole vocabulary to llama.cpp's grammar in one native call, which nothing can stop; a grammar that keeps many
/// parse stacks open made that one call take seconds while every other sequence on the worker waited. Here the
/// vocabulary goes through the grammar in chunks of <see cref="ChunkSize"/> tokens, and <c>interrupted</c> is asked
/// between chunks, so a cancel or a time limit lands within one chunk instead of one token. The grammar judges each
/// candidate on its own (llama.cpp checks each token's text against the open stacks), so the chunked pass keeps
/// exactly the tokens the single call would: same seed, same text.
/// </summary>
public sealed class GrammarSamplingPipeline : BaseSamplingPipeline
{
    private readonly Func<bool> _interrupted;
    private SafeLLamaSamplerChainHandle? _grammarChain;

    // Buffers of the shortcuts, reused at every token (as LLamaSharp rents its own).
    private readonly LLamaTokenData[] _single = new LLamaTokenData[1];
    private LLamaTokenData[]? _top;

    /// <param name="grammar">The grammar, start rule included.</param>
    /// <param name="interrupted">True once the sequence must stop (asked between chunks of the slow path).</param>
    public GrammarSamplingPipeline(LlamaGrammar grammar, Func<bool> interrupted)
    {
        Grammar = grammar;
        _interrupted = interrupted;
    }

    public LlamaGrammar Grammar { get; }

    /// <summary>Tokens the grammar checks per native call on the slow path.</summary>
    public int ChunkSize { get; init; } = 1024;

    public IReadOnlyDictionary<LLamaToken, float> LogitBias { get; init; } = new Dictionary<LLamaToken, float>();

    public float RepeatPenalty { get; init; } = 1;

    public float FrequencyPenalty { get; init; }

    public float PresencePenalty { get; init; }

    public int PenaltyCount { get; init; } = 64;

    public float Temperature { get; init; } = 0.75f;

    public int TopK { get; init; } = 40;

    public float TypicalP { get; init; } = 1;

    public float TopP { get; init; } = 0.9f;

    public float MinP { get; init; } = 0.1f;

    public int MinKeep { get; init; } = 1;

    public uint Seed { get; init; }

    /// <summary>How many chunks the slow path has sent through the grammar so far (for tests).</summary>
    public int ChunksChecked { get; private set; }

    /// <summary>How many tokens needed the slow path (for tests).</summary>
    public int SlowPaths { get; private set; }

    public override void Dispose()
    {
        base.Dispose();
        _grammarChain?.Dispose();
        _grammarChain = null;
    }

    public override void Reset()
    {
        base.Reset();
        _grammarChain?.Reset();
    }

    public override void Accept(LLamaToken token)
    {
        base.Accept(token);
        _grammarChain?.Accept(token);
    }

    /// <summary>The same chain as <see cref="DefaultSamplingPipeline"/> builds (LLamaSharp 0.30.0).</summary>
    protected override SafeLLamaSamplerChainHandle CreateChain(SafeLLamaContextHandle context)
    {
        var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
        if (LogitBias.Count > 0)
        {
            var biases = LogitBias.Select(b => new LLamaLogitBias { Token = b.Key, Bias = b.Value }).ToArray();
            chain.AddLogitBias(context.Vocab.Count, biases);
        }

        chain.AddPenalties(PenaltyCount, RepeatPenalty, FrequencyPenalty, PresencePenalty);
        chain.AddTopK(TopK);
        chain.AddTypical(TypicalP, MinKeep);
        chain.AddTopP(TopP, MinKeep);
        chain.AddMinP(MinP, MinKeep);
        chain.AddTemperature(Temperature);
        chain.AddDistributionSampler(Seed);
        return chain;
    }

    public override LLamaToken Sample(SafeLLamaContextHandle ctx, int index)
    {
        if (_grammarChain is null)
        {
            _grammarChain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
            _grammarChain.AddGrammar(ctx.ModelHandle, Grammar.Gbnf, Grammar.Root);
        }

        var vocab = ctx.ModelHandle.Vocab.Count;
        var all = ArrayPool<LLamaTokenData>.Shared.Rent(vocab);
        try
        {
            // 1. The chain's pick, checked alone; 2. the top K after the chain, checked together (as LLamaSharp does).
            if (Shortcut(ctx, index, all, vocab) is { } quick)
            {
                Accept(quick);
                return quick;
            }

            // 3. Every token through the grammar, a chunk per native call, then the chain over what is left.
            SlowPaths++;
            CheckInChunks(ctx.GetLogitsIth(index), all, vocab);
            using (LLamaTokenDataArrayNative.Create(new LLamaTokenDataArray(all.AsMemory(0, vocab), isSorted: false), out var filtered))
            {
                Apply(ctx, ref filtered);
                var token = filtered.Data[checked((int)filtered.Selected)].ID;
                Accept(token);
                return token;
            }
        }
        finally
        {
            ArrayPool<LLamaTokenData>.Shared.Return(all);
        }
    }

    /// <summary>
    /// Fills <paramref name="all"/> with every token's logit and marks what the grammar rejects (-inf), a chunk of
    /// <see cref="ChunkSize"/> tokens per native call, asking between chunks whether the sequence must stop.
    /// </summary>
    private void CheckInChunks(Span<float> logits, LLamaTokenData[] all, int vocab)
    {
        for (var t = 0; t < vocab; t++)
        {
            all[t] = new LLamaTokenData((LLamaToken)t, logits[t], 0);
        }

        var chunk = ArrayPool<LLamaTokenData>.Shared.Rent(ChunkSize);
        try
        {
            for (var start = 0; start < vocab; start += ChunkSize)
            {
                if (_interrupted())
                {
                    throw new SamplingInterruptedException();
                }

                var length = Math.Min(ChunkSize, vocab - start);
                all.AsSpan(start, length).CopyTo(chunk);
                using (LLamaTokenDataArrayNative.Create(new LLamaTokenDataArray(chunk.AsMemory(0, length), isSorted: false), out var native))
                {
                    _grammarChain!.Apply(ref native);
                }

                // The grammar only marks rejected tokens (logit -inf); the order stays as it was.
                chunk.AsSpan(0, length).CopyTo(all.AsSpan(start, length));
                ChunksChecked++;
            }
        }
        finally
        {
            ArrayPool<LLamaTokenData>.Shared.Return(chunk);
        }
    }

    private LLamaToken? Shortcut(SafeLLamaContextHandle ctx, int index, LLamaTokenData[] all, int vocab)
    {
        using (LLamaTokenDataArrayNative.Create(LLamaTokenDataArray.Create(ctx.GetLogitsIth(index), all.AsMemory(0, vocab)), out var native))
        {
            Apply(ctx, ref native);
            var picked = native.Data[checked((int)native.Selected)].ID;
            _single[0] = new LLamaTokenData(picked, 1, 0);
            using (LLamaTokenDataArrayNative.Create(new LLamaTokenDataArray(_single, isSorted: true), out var one))
            {
                _grammarChain!.Apply(ref one);
                if (!float.IsNegativeInfinity(one.Data[0].Logit))
                {
                    return picked;
                }
            }

            if (TopK <= 0)
            {
                return null;
            }

            var count = Math.Min(TopK, native.Data.Length);
            _top ??= new LLamaTokenData[TopK];
            native.Data[..count].CopyTo(_top);
            using (LLamaTokenDataArrayNative.Create(new LLamaTokenDataArray(_top.AsMemory(0, count), isSorted: true), out var topK))
            {
                _grammarChain!.Apply(ref topK);
                var candidate = topK.Data[checked((int)topK.Selected)];
                return float.IsNegativeInfinity(candidate.Logit) ? null : candidate.ID;
            }
        }
    }
}
