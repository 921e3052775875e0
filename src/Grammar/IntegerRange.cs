using System.Globalization;

namespace LlmServing.Grammar;

/// <summary>
/// The integers from a minimum to a maximum (either may be open) as one GBNF expression that matches exactly those
/// numbers, written as JSON writes them (no leading zeros, no "-0"): digit ranges built length by length, as
/// llama.cpp's own JSON Schema converter does. Up to 16 digits, as the plain integer rule allows.
/// </summary>
public static class IntegerRange
{
    /// <summary>The most digits an integer is written with (the plain rule's 1 + 15).</summary>
    public const int MaxDigits = 16;

    /// <summary>The largest magnitude a bound may have.</summary>
    public const long Limit = 9_999_999_999_999_999;

    /// <summary>The expression for the integers from <paramref name="min"/> to <paramref name="max"/> (null: open).</summary>
    public static string Expression(long? min, long? max)
    {
        if (min > max)
        {
            throw new ArgumentException("The minimum is above the maximum.");
        }

        var parts = new List<string>();
        if (min is null || min < 0)
        {
            // Negative numbers: "-" then magnitudes from 1 (or |max| when max < 0) to |min| (or open).
            var from = max is < 0 ? -max.Value : 1;
            parts.Add("\"-\" " + NonNegative(from, min is null ? null : -min.Value));
        }

        if (max is null || max >= 0)
        {
            parts.Add(NonNegative(Math.Max(min ?? 0, 0), max));
        }

        return parts.Count == 1 ? parts[0] : "(" + string.Join(" | ", parts) + ")";
    }

    /// <summary>The non-negative integers from <paramref name="from"/> to <paramref name="to"/> (open: up to 16 digits).</summary>
    private static string NonNegative(long from, long? to)
    {
        var alternatives = new List<string>();
        var lowDigits = Digits(from);
        var highDigits = to is { } t ? Digits(t) : MaxDigits;
        for (var d = lowDigits; d <= highDigits; d++)
        {
            var low = Math.Max(from, d == 1 ? 0 : Pow10(d - 1));
            var high = d == highDigits && to is { } top ? top : Pow10(d) - 1;
            if (low <= high)
            {
                alternatives.Add(SameLength(Text(low, d), Text(high, d)));
            }
        }

        return alternatives.Count == 1 ? alternatives[0] : "(" + string.Join(" | ", alternatives) + ")";
    }

    /// <summary>Numbers of one length from <paramref name="a"/> to <paramref name="b"/> (digit strings, a &lt;= b).</summary>
    private static string SameLength(string a, string b)
    {
        if (a.Length == 0)
        {
            return "";
        }

        if (a[0] == b[0])
        {
            return Join($"\"{a[0]}\"", SameLength(a[1..], b[1..]));
        }

        var rest = a.Length - 1;
        var lowFull = a[1..].All(c => c == '0'); // a's first digit takes every tail
        var highFull = b[1..].All(c => c == '9');
        var parts = new List<string>();
        var middleFrom = (char)(a[0] + (lowFull ? 0 : 1));
        var middleTo = (char)(b[0] - (highFull ? 0 : 1));
        if (!lowFull)
        {
            parts.Add(Join($"\"{a[0]}\"", SameLength(a[1..], new string('9', rest))));
        }

        if (middleFrom <= middleTo)
        {
            parts.Add(Join(Class(middleFrom, middleTo), rest == 0 ? "" : rest == 1 ? "[0-9]" : $"[0-9]{{{rest}}}"));
        }

        if (!highFull)
        {
            parts.Add(Join($"\"{b[0]}\"", SameLength(new string('0', rest), b[1..])));
        }

        return parts.Count == 1 ? parts[0] : "(" + string.Join(" | ", parts) + ")";
    }

    private static string Class(char from, char to) => from == to ? $"\"{from}\"" : $"[{from}-{to}]";

    private static string Join(string head, string tail) => tail.Length == 0 ? head : head + " " + tail;

    private static int Digits(long n) => n.ToString(CultureInfo.InvariantCulture).Length;

    private static long Pow10(int n)
    {
        long p = 1;
        for (var i = 0; i < n; i++)
        {
            p *= 10;
        }

        return p;
    }

    private static string Text(long n, int digits) => n.ToString(CultureInfo.InvariantCulture).PadLeft(digits, '0');
}
