using LlmServing.ModelGen;

// Usage: ModelGen [--out PATH] [--preset tiny|small] [--embd N] [--layers N] [--ff N] [--heads N] [--kv-heads N]
//                 [--vocab N] [--ctx N] [--f32] [--seed N] [--chatml] [--bpe]   (--bpe: GPT-2-style byte-level BPE vocabulary)
var options = new Dictionary<string, string>(StringComparer.Ordinal);
for (var i = 0; i < args.Length; i++)
{
    if (!args[i].StartsWith("--", StringComparison.Ordinal))
    {
        return Fail($"unexpected argument '{args[i]}'");
    }

    var key = args[i][2..];
    options[key] = key is "f32" or "chatml" or "bpe" ? "true" : (i + 1 < args.Length ? args[++i] : "");
}

var shape = options.GetValueOrDefault("preset", "tiny") switch
{
    "tiny" => ModelShape.Tiny,
    "small" => ModelShape.Small,
    var p => null,
};
if (shape is null)
{
    return Fail($"unknown preset '{options["preset"]}' (tiny, small)");
}

int Int(string key, int fallback) => options.TryGetValue(key, out var s) ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : fallback;
shape = shape with
{
    Embedding = Int("embd", shape.Embedding),
    Layers = Int("layers", shape.Layers),
    FeedForward = Int("ff", shape.FeedForward),
    Heads = Int("heads", shape.Heads),
    KvHeads = Int("kv-heads", Int("heads", shape.KvHeads)),
    Vocabulary = Int("vocab", shape.Vocabulary),
    ContextLength = Int("ctx", shape.ContextLength),
    Seed = Int("seed", shape.Seed),
    F16 = !options.ContainsKey("f32"),
    ChatMl = options.ContainsKey("chatml"),
    Bpe = options.ContainsKey("bpe"),
};
var path = options.GetValueOrDefault("out", "models/random-tiny.gguf");
RandomLlamaModel.Write(path, shape);
Console.WriteLine($"wrote {path}: {shape.ParameterCount:N0} parameters, {new FileInfo(path).Length:N0} bytes");
return 0;

static int Fail(string message)
{
    Console.Error.WriteLine($"ModelGen: {message}");
    return 2;
}
