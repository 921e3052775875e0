using System.Security.Cryptography;
using System.Text;
using LLama;
using LLama.Common;
using LLama.Native;
using LlmServing.ModelGen;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>The project's own GGUF writer produces a model that llama.cpp loads and that tokenizes any text.</summary>
[TestFixture]
public sealed class GgufModelTests
{
    private LLamaWeights _weights = null!;
    private LLamaContext _context = null!;

    [OneTimeSetUp]
    public void Load()
    {
        var parameters = new ModelParams(TestServices.ModelPath) { ContextSize = 256, Threads = 1, BatchThreads = 1 };
        _weights = LLamaWeights.LoadFromFile(parameters);
        _context = _weights.CreateContext(parameters);
    }

    [OneTimeTearDown]
    public void Unload()
    {
        _context.Dispose();
        _weights.Dispose();
    }

    [Test]
    public void ShouldLoadAsALlamaModelWithTheGeneratedShape()
    {
        Assert.Multiple(() =>
        {
            Assert.That(_weights.Metadata["general.architecture"], Is.EqualTo("llama"));
            Assert.That(_weights.Vocab.Count, Is.EqualTo(ModelShape.Tiny.Vocabulary));
            Assert.That(_weights.EmbeddingSize, Is.EqualTo(ModelShape.Tiny.Embedding));
            Assert.That((long)_weights.ParameterCount, Is.EqualTo(ModelShape.Tiny.ParameterCount));
            Assert.That(_weights.Vocab.EOS, Is.EqualTo((LLamaToken)SpmVocabulary.EosId));
            Assert.That(_weights.Vocab.BOS, Is.EqualTo((LLamaToken)SpmVocabulary.BosId));
        });
    }

    [TestCase("hello the world")]
    [TestCase("Grüße, 世界! 🚀🦙 naïve café")]
    [TestCase("tabs\tnew\nlines\r\n and \u0001 control \u007f bytes")]
    [TestCase("</s> <s> <unk> <0x41>")]
    [TestCase("   leading and trailing spaces   ")]
    public void ShouldRoundTripText_WhenTokenizingArbitraryUtf8(string text) => AssertRoundTrip(text);

    [Test]
    public void ShouldRoundTripText_WhenTokenizingRandomUnicode()
    {
        var random = new Random(42);
        for (var i = 0; i < 200; i++)
        {
            var builder = new StringBuilder();
            var length = random.Next(1, 40);
            while (builder.Length < length)
            {
                var scalar = random.Next(1, 0x10FFFF);
                if (scalar is >= 0xD800 and <= 0xDFFF)
                {
                    continue; // surrogates are not scalar values
                }

                builder.Append(char.ConvertFromUtf32(scalar));
            }

            AssertRoundTrip(builder.ToString());
        }
    }

    [Test]
    public void ShouldNotCrash_WhenTokenizingInvalidSurrogatesAndControlCharacters()
    {
        var random = new Random(7);
        for (var i = 0; i < 300; i++)
        {
            // Lone surrogates, NULs, control and private-use characters: .NET encodes the lone surrogates as U+FFFD.
            var text = new string(Enumerable.Range(0, random.Next(1, 64)).Select(_ => random.Next(4) switch
            {
                0 => (char)random.Next(0xD800, 0xE000),
                1 => (char)random.Next(0, 0x20),
                2 => (char)random.Next(0xE000, 0xF900),
                _ => (char)random.Next(0x20, 0xD800),
            }).ToArray());

            var tokens = _context.Tokenize(text, addBos: true, special: false);
            var decoder = new StreamingTokenDecoder(_context);
            decoder.AddRange(tokens.Skip(1).ToArray());

            Assert.That(tokens, Is.Not.Empty);
            Assert.That(decoder.Read().Trim(), Is.EqualTo(Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(text)).Trim()), $"case {i}");
        }
    }

    [Test]
    public void ShouldKeepSpecialTokenTextAsText_WhenTokenizingWithoutSpecialParsing()
    {
        var asText = _context.Tokenize("</s>", addBos: false, special: false);
        var asControl = _context.Tokenize("</s>", addBos: false, special: true);

        Assert.That(asText, Does.Not.Contain((LLamaToken)SpmVocabulary.EosId));
        Assert.That(asControl, Is.EqualTo(new[] { (LLamaToken)SpmVocabulary.EosId }));
    }

    [Test]
    public void ShouldWriteIdenticalFiles_WhenShapeAndSeedAreTheSame()
    {
        var directory = Directory.CreateTempSubdirectory("llmserving-gguf-").FullName;
        var a = Path.Combine(directory, "a.gguf");
        var b = Path.Combine(directory, "b.gguf");
        var shape = ModelShape.Tiny with { Seed = 99 };

        RandomLlamaModel.Write(a, shape);
        RandomLlamaModel.Write(b, shape);

        Assert.That(SHA256.HashData(File.ReadAllBytes(b)), Is.EqualTo(SHA256.HashData(File.ReadAllBytes(a))));
        Directory.Delete(directory, recursive: true);
    }

    private void AssertRoundTrip(string text)
    {
        var tokens = _context.Tokenize(text, addBos: false, special: false);
        var decoder = new StreamingTokenDecoder(_context);
        decoder.AddRange(tokens);
        var decoded = decoder.Read();
        // SentencePiece adds one leading space to the text before tokenizing.
        Assert.That(decoded.StartsWith(' ') ? decoded[1..] : decoded, Is.EqualTo(text), $"tokens: {string.Join(",", tokens)}");
    }
}
