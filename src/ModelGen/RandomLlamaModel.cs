using System.ComponentModel.DataAnnotations;

namespace LlmServing.ModelGen;

/// <summary>
/// Writes a llama-architecture GGUF with random weights and a byte-level SPM (or GPT-2-style BPE) vocabulary. Its output is noise,
/// but llama.cpp runs it exactly like a trained model of the same shape, which is what tests and benchmarks
/// need. The same shape and seed give the same file.
/// </summary>
public static class RandomLlamaModel
{
    public const string ImStart = "<|im_start|>";
    public const string ImEnd = "<|im_end|>";

    private const string ChatMlTemplate =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}" +
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    public static void Write(string path, ModelShape shape)
    {
        Validator.ValidateObject(shape, new ValidationContext(shape), validateAllProperties: true);
        if (shape.Embedding % shape.Heads != 0 || shape.Heads % shape.KvHeads != 0)
        {
            throw new ValidationException("Embedding must be a multiple of Heads, and Heads a multiple of KvHeads.");
        }

        var gguf = new GgufWriter();
        gguf.Add("general.architecture", "llama");
        gguf.Add("general.name", $"llmserving-random-{shape.ParameterCount / 1000}k");
        gguf.Add("general.alignment", (uint)GgufWriter.Alignment);
        gguf.Add("general.file_type", shape.F16 ? 1u : 0u);
        gguf.Add("llama.context_length", (uint)shape.ContextLength);
        gguf.Add("llama.embedding_length", (uint)shape.Embedding);
        gguf.Add("llama.block_count", (uint)shape.Layers);
        gguf.Add("llama.feed_forward_length", (uint)shape.FeedForward);
        gguf.Add("llama.attention.head_count", (uint)shape.Heads);
        gguf.Add("llama.attention.head_count_kv", (uint)shape.KvHeads);
        gguf.Add("llama.rope.dimension_count", (uint)shape.HeadDim);
        gguf.Add("llama.attention.layer_norm_rms_epsilon", 1e-5f);
        gguf.Add("llama.vocab_size", (uint)shape.Vocabulary);
        if (shape.Bpe)
        {
            if (shape.ChatMl)
            {
                throw new ValidationException("The BPE vocabulary has no chat template tokens; use ChatMl with the SPM vocabulary.");
            }

            var (bpeTokens, bpeTypes, merges, endOfText) = BpeVocabulary.Build(shape.Vocabulary);
            gguf.Add("tokenizer.ggml.model", "gpt2");
            gguf.Add("tokenizer.ggml.pre", "gpt-2");
            gguf.Add("tokenizer.ggml.tokens", bpeTokens);
            gguf.Add("tokenizer.ggml.token_type", bpeTypes);
            gguf.Add("tokenizer.ggml.merges", merges);
            gguf.Add("tokenizer.ggml.bos_token_id", (uint)endOfText);
            gguf.Add("tokenizer.ggml.eos_token_id", (uint)endOfText);
            gguf.Add("tokenizer.ggml.add_bos_token", false);
            gguf.Add("tokenizer.ggml.add_eos_token", false);
        }
        else
        {
            var (tokens, scores, types) = SpmVocabulary.Build(shape.Vocabulary, shape.ChatMl ? [ImStart, ImEnd] : null);
            gguf.Add("tokenizer.ggml.model", "llama");
            gguf.Add("tokenizer.ggml.tokens", tokens);
            gguf.Add("tokenizer.ggml.scores", scores);
            gguf.Add("tokenizer.ggml.token_type", types);
            gguf.Add("tokenizer.ggml.unknown_token_id", (uint)SpmVocabulary.UnknownId);
            gguf.Add("tokenizer.ggml.bos_token_id", (uint)SpmVocabulary.BosId);
            gguf.Add("tokenizer.ggml.eos_token_id", (uint)SpmVocabulary.EosId);
            gguf.Add("tokenizer.ggml.add_bos_token", true);
            gguf.Add("tokenizer.ggml.add_eos_token", false);
        }

        if (shape.ChatMl)
        {
            gguf.Add("tokenizer.chat_template", ChatMlTemplate);
        }

        var random = new Random(shape.Seed);
        var matrix = shape.F16 ? GgufWriter.TensorType.F16 : GgufWriter.TensorType.F32;
        ulong e = (ulong)shape.Embedding, f = (ulong)shape.FeedForward, v = (ulong)shape.Vocabulary;
        ulong kv = (ulong)(shape.HeadDim * shape.KvHeads);
        Func<float> Normal(double std) => () => (float)(std * Gaussian(random));
        Func<float> ones = () => 1f;

        gguf.AddTensor("token_embd.weight", [e, v], matrix, Normal(1.0));
        for (var i = 0; i < shape.Layers; i++)
        {
            var p = $"blk.{i}.";
            var std = 1.0 / Math.Sqrt(shape.Embedding);
            gguf.AddTensor(p + "attn_norm.weight", [e], GgufWriter.TensorType.F32, ones);
            gguf.AddTensor(p + "attn_q.weight", [e, e], matrix, Normal(std));
            gguf.AddTensor(p + "attn_k.weight", [e, kv], matrix, Normal(std));
            gguf.AddTensor(p + "attn_v.weight", [e, kv], matrix, Normal(std));
            gguf.AddTensor(p + "attn_output.weight", [e, e], matrix, Normal(std));
            gguf.AddTensor(p + "ffn_norm.weight", [e], GgufWriter.TensorType.F32, ones);
            gguf.AddTensor(p + "ffn_gate.weight", [e, f], matrix, Normal(std));
            gguf.AddTensor(p + "ffn_up.weight", [e, f], matrix, Normal(std));
            gguf.AddTensor(p + "ffn_down.weight", [f, e], matrix, Normal(1.0 / Math.Sqrt(shape.FeedForward)));
        }

        gguf.AddTensor("output_norm.weight", [e], GgufWriter.TensorType.F32, ones);
        // Unit-variance output weights give logits with a spread of about sqrt(embedding): sampling is
        // decisive (greedy output does not flip on rounding noise between batch compositions). The rows of the
        // control tokens are zero, so EOS is practically never sampled and generations run to max_tokens.
        var row = 0UL;
        var column = 0UL;
        gguf.AddTensor("output.weight", [e, v], matrix, () =>
        {
            var token = row;
            if (++column == e)
            {
                column = 0;
                row++;
            }

            return token < (ulong)SpmVocabulary.FirstByteId ? 0f : (float)Gaussian(random);
        });

        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }

        // Write next to the target and rename, so a concurrent reader never sees a half-written model.
        var temporary = path + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
        {
            gguf.Write(stream);
        }

        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>Writes the model unless a file already exists at <paramref name="path"/>.</summary>
    public static string EnsureExists(string path, ModelShape shape)
    {
        if (!File.Exists(path))
        {
            Write(path, shape);
        }

        return path;
    }

    private static double Gaussian(Random random)
    {
        var u1 = 1.0 - random.NextDouble();
        var u2 = random.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }
}
