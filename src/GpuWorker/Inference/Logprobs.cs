using System.Text;

namespace LlmServing.GpuWorker.Inference;

/// <summary>One generated token with its log-probability under the model, and the most likely alternatives.</summary>
public sealed record TokenLogprob(string Token, float Logprob, byte[] Bytes, IReadOnlyList<TopLogprob> TopLogprobs);

/// <summary>An alternative at one position.</summary>
public sealed record TopLogprob(string Token, float Logprob, byte[] Bytes);

/// <summary>Log-probabilities from raw logits (the model's distribution, before temperature or any sampler). Pure.</summary>
public static class Logprobs
{
    /// <summary>The chosen token's log-probability and the <paramref name="top"/> most likely tokens, most likely first.</summary>
    public static (float Chosen, IReadOnlyList<(int Token, float Logprob)> Top) Of(ReadOnlySpan<float> logits, int chosen, int top)
    {
        var max = float.NegativeInfinity;
        foreach (var l in logits)
        {
            max = Math.Max(max, l);
        }

        double sum = 0;
        foreach (var l in logits)
        {
            sum += Math.Exp(l - max);
        }

        var logZ = max + (float)Math.Log(sum);
        var best = new List<(int Token, float Logprob)>(top + 1);
        if (top > 0)
        {
            for (var i = 0; i < logits.Length; i++)
            {
                var value = logits[i];
                if (best.Count < top || value > best[^1].Logprob)
                {
                    var at = best.FindIndex(b => value > b.Logprob);
                    best.Insert(at < 0 ? best.Count : at, (i, value));
                    if (best.Count > top)
                    {
                        best.RemoveAt(best.Count - 1);
                    }
                }
            }
        }

        return (logits[chosen] - logZ, best.Select(b => (b.Token, b.Logprob - logZ)).ToList());
    }

    /// <summary>A token's text for JSON: its bytes as UTF-8 (invalid or partial sequences and NUL as U+FFFD).</summary>
    public static string Text(byte[] bytes) => Encoding.UTF8.GetString(bytes).Replace('\0', '\uFFFD');
}
