using System.Text;

namespace LlmServing.GpuWorker.Inference;

/// <summary>Finds stop strings in generated text as it grows. Pure: no engine.</summary>
public static class StopMatcher
{
    /// <summary>
    /// Where the earliest stop string begins in <paramref name="text"/>, looking only at matches that end in the text
    /// appended after <paramref name="previousLength"/> (earlier text was checked before); -1 when there is none. A
    /// stop string may span several appends (tokens).
    /// </summary>
    public static int Find(StringBuilder text, int previousLength, IReadOnlyList<string> stops)
    {
        var cut = -1;
        foreach (var stop in stops)
        {
            if (stop.Length == 0)
            {
                continue;
            }

            var from = Math.Max(0, previousLength - stop.Length + 1);
            var at = text.ToString(from, text.Length - from).IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || from + at < cut))
            {
                cut = from + at;
            }
        }

        return cut;
    }
}
