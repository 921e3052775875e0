using LLama;
using LLama.Common;
using LLama.Native;
using LLama.Sampling;
using LlmServing.GpuWorker.Inference;
using LlmServing.Tests.Infrastructure;
using LlamaGrammar = LLama.Sampling.Grammar;

namespace LlmServing.Tests;

/// <summary>
/// The worker's grammar sampling (<see cref="GrammarSamplingPipeline"/>) on the trained TinyStories model, no servers:
/// it writes what LLamaSharp's pipeline writes for the same seed, and a cancel or time limit stops it between chunks
/// of the grammar's pass over the vocabulary instead of after the whole pass.
/// </summary>
[TestFixture]
public sealed class GrammarSamplingTests
{
    // A word that must start with 'z': the model's own picks fail the grammar, so every token takes the slow path.
    private const string Gbnf = "root ::= \"z\" [a-y]{4,12} \".\"";

    private LLamaWeights _weights = null!;
    private ModelParams _parameters = null!;

    [OneTimeSetUp]
    public void Load()
    {
        _parameters = new ModelParams(TestServices.StoriesModelPath) { ContextSize = 256, Threads = 1, BatchThreads = 1 };
        _weights = LLamaWeights.LoadFromFile(_parameters);
    }

    [OneTimeTearDown]
    public void Unload() => _weights.Dispose();

    private List<LLamaToken> Generate(ISamplingPipeline pipeline, int steps)
    {
        using var context = _weights.CreateContext(_parameters);
        var tokens = context.Tokenize("Once upon a time, there was a", addBos: true);
        var batch = new LLamaBatch();
        for (var i = 0; i < tokens.Length; i++)
        {
            batch.Add(tokens[i], i, LLamaSeqId.Zero, i == tokens.Length - 1);
        }

        var written = new List<LLamaToken>();
        var position = tokens.Length;
        for (var step = 0; step < steps; step++)
        {
            Assert.That(context.NativeHandle.Decode(batch), Is.EqualTo(DecodeResult.Ok));
            var token = pipeline.Sample(context.NativeHandle, batch.TokenCount - 1);
            if (token.IsEndOfGeneration(_weights.Vocab))
            {
                break;
            }

            written.Add(token);
            batch.Clear();
            batch.Add(token, position++, LLamaSeqId.Zero, true);
        }

        return written;
    }

    [TestCase(1u)]
    [TestCase(7u)]
    [TestCase(42u)]
    public void ShouldWriteWhatLlamaSharpWrites_WhenTheVocabularyGoesThroughTheGrammarInChunks(uint seed)
    {
        using var reference = new DefaultSamplingPipeline { Temperature = 1, TopK = 40, TopP = 0.95f, MinP = 0.05f, Seed = seed, Grammar = new LlamaGrammar(Gbnf, "root") };
        using var chunked = new GrammarSamplingPipeline(new LlamaGrammar(Gbnf, "root"), () => false)
        {
            Temperature = 1, TopK = 40, TopP = 0.95f, MinP = 0.05f, Seed = seed, ChunkSize = 64,
        };

        var expected = Generate(reference, 16);
        var actual = Generate(chunked, 16);

        Assert.That(actual, Is.EqualTo(expected), "same seed, same tokens");
        Assert.That(chunked.SlowPaths, Is.GreaterThan(0), "the chunked pass ran");
        Assert.That(_weights.Vocab.Count / 64, Is.GreaterThan(1), "more than one chunk per pass");
        var text = string.Concat(actual.Select(t => _weights.Vocab.LLamaTokenToString(t, true)));
        Assert.That(text, Does.Match("^z[a-y]{4,12}\\.$"), "the grammar holds");
    }

    [Test]
    public void ShouldStopBetweenChunks_WhenTheSequenceIsCancelledDuringTheGrammarsPass()
    {
        var asked = 0;
        using var pipeline = new GrammarSamplingPipeline(new LlamaGrammar(Gbnf, "root"), () => ++asked > 2)
        {
            Temperature = 1, Seed = 3, ChunkSize = 64,
        };

        Assert.Throws<SamplingInterruptedException>(() => Generate(pipeline, 4));
        Assert.That(pipeline.ChunksChecked, Is.EqualTo(2), $"stopped after 2 of {(_weights.Vocab.Count + 63) / 64} chunks, within the token");
    }
}
