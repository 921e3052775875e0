using System.Text;

namespace LlmServing.ModelGen;

/// <summary>
/// Minimal GGUF v3 writer: typed metadata and F32/F16 tensors, data aligned to <see cref="Alignment"/>.
/// Key types matter: llama.cpp checks them strictly (e.g. <c>llama.context_length</c> must be u32).
/// </summary>
public sealed class GgufWriter
{
    public const int Alignment = 32;

    private enum ValueType : uint
    {
        UInt32 = 4,
        Int32 = 5,
        Float32 = 6,
        Bool = 7,
        String = 8,
        Array = 9,
    }

    public enum TensorType : uint
    {
        F32 = 0,
        F16 = 1,
    }

    private sealed record Tensor(string Name, ulong[] Dims, TensorType Type, Action<BinaryWriter> WriteData)
    {
        public ulong ByteSize => Dims.Aggregate(1UL, (a, d) => a * d) * (Type == TensorType.F32 ? 4UL : 2UL);
    }

    private readonly List<(string Key, Action<BinaryWriter> Write)> _metadata = [];
    private readonly List<Tensor> _tensors = [];

    public void Add(string key, uint value) => _metadata.Add((key, w => { w.Write((uint)ValueType.UInt32); w.Write(value); }));

    public void Add(string key, float value) => _metadata.Add((key, w => { w.Write((uint)ValueType.Float32); w.Write(value); }));

    public void Add(string key, bool value) => _metadata.Add((key, w => { w.Write((uint)ValueType.Bool); w.Write(value ? (byte)1 : (byte)0); }));

    public void Add(string key, string value) => _metadata.Add((key, w => { w.Write((uint)ValueType.String); WriteString(w, value); }));

    public void Add(string key, IReadOnlyList<string> values) => _metadata.Add((key, w =>
    {
        w.Write((uint)ValueType.Array);
        w.Write((uint)ValueType.String);
        w.Write((ulong)values.Count);
        foreach (var v in values)
        {
            WriteString(w, v);
        }
    }));

    public void Add(string key, IReadOnlyList<float> values) => _metadata.Add((key, w =>
    {
        w.Write((uint)ValueType.Array);
        w.Write((uint)ValueType.Float32);
        w.Write((ulong)values.Count);
        foreach (var v in values)
        {
            w.Write(v);
        }
    }));

    public void Add(string key, IReadOnlyList<int> values) => _metadata.Add((key, w =>
    {
        w.Write((uint)ValueType.Array);
        w.Write((uint)ValueType.Int32);
        w.Write((ulong)values.Count);
        foreach (var v in values)
        {
            w.Write(v);
        }
    }));

    /// <summary>Adds a tensor. <paramref name="dims"/> are ggml's ne[]: the innermost (contiguous) dimension first.</summary>
    public void AddTensor(string name, ulong[] dims, TensorType type, Func<float> values)
    {
        var count = dims.Aggregate(1UL, (a, d) => a * d);
        _tensors.Add(new Tensor(name, dims, type, w =>
        {
            for (ulong i = 0; i < count; i++)
            {
                if (type == TensorType.F32)
                {
                    w.Write(values());
                }
                else
                {
                    w.Write((Half)values());
                }
            }
        }));
    }

    public void Write(Stream stream)
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write("GGUF"u8);
        w.Write(3u);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, write) in _metadata)
        {
            WriteString(w, key);
            write(w);
        }

        ulong offset = 0;
        foreach (var t in _tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (var d in t.Dims)
            {
                w.Write(d);
            }

            w.Write((uint)t.Type);
            w.Write(offset);
            offset = Align(offset + t.ByteSize);
        }

        Pad(w);
        foreach (var t in _tensors)
        {
            t.WriteData(w);
            Pad(w);
        }
    }

    private static ulong Align(ulong n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void Pad(BinaryWriter w)
    {
        w.Flush();
        var position = (ulong)w.BaseStream.Position;
        for (var i = position; i < Align(position); i++)
        {
            w.Write((byte)0);
        }
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }
}
