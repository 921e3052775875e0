using System.Globalization;
using System.Net;
using System.Text;

namespace LlmServing.Producer.OperatorConsole;

/// <summary>
/// Charts drawn on the server as inline SVG: nothing to download, nothing to run in the browser. Pure functions of
/// their data (unit tested).
/// </summary>
public static class SvgCharts
{
    private const int Width = 640;
    private const int Height = 180;
    private const int Left = 44;
    private const int Bottom = 22;
    private const int Top = 10;

    /// <summary>Colours of job statuses (the same in the charts and the status badges).</summary>
    public static string Colour(string status) => status switch
    {
        Contracts.JobStatuses.Succeeded => "#2e7d32",
        Contracts.JobStatuses.Failed => "#c62828",
        Contracts.JobStatuses.Cancelled => "#757575",
        Contracts.JobStatuses.Expired => "#ef6c00",
        Contracts.JobStatuses.Running => "#1565c0",
        _ => "#6a1b9a",
    };

    /// <summary>
    /// Stacked bars: one bar per bucket, one segment per status, with a y axis to the tallest bar and a legend.
    /// </summary>
    /// <param name="buckets">Per bucket (left to right): jobs per status.</param>
    /// <param name="statuses">The statuses to stack, bottom up (and in the legend).</param>
    /// <param name="firstLabel">Label under the first bar (e.g. "-60 min"); the last one is "now".</param>
    public static string StackedBars(IReadOnlyList<IReadOnlyDictionary<string, long>> buckets, IReadOnlyList<string> statuses, string title, string firstLabel)
    {
        var max = Math.Max(1, buckets.Select(b => statuses.Sum(s => b.GetValueOrDefault(s))).DefaultIfEmpty(0).Max());
        var plotWidth = Width - Left - 8;
        var plotHeight = Height - Top - Bottom;
        var slot = plotWidth / (double)Math.Max(1, buckets.Count);
        var svg = Open(title);
        Axis(svg, max, plotHeight, firstLabel);
        for (var i = 0; i < buckets.Count; i++)
        {
            var y = (double)(Top + plotHeight);
            foreach (var status in statuses)
            {
                var count = buckets[i].GetValueOrDefault(status);
                if (count == 0)
                {
                    continue;
                }

                var h = count * plotHeight / (double)max;
                y -= h;
                svg.Append(Inv($"<rect x=\"{Left + i * slot + 2:0.#}\" y=\"{y:0.#}\" width=\"{slot - 4:0.#}\" height=\"{h:0.#}\" fill=\"{Colour(status)}\">"))
                    .Append("<title>").Append(WebUtility.HtmlEncode($"{count} {status}")).Append("</title></rect>");
            }
        }

        var x = Left;
        foreach (var status in statuses)
        {
            svg.Append(Inv($"<rect x=\"{x}\" y=\"{Height - 9}\" width=\"8\" height=\"8\" fill=\"{Colour(status)}\"/>"))
                .Append(Inv($"<text x=\"{x + 11}\" y=\"{Height - 1}\" font-size=\"10\">{status}</text>"));
            x += 16 + status.Length * 6;
        }

        return svg.Append("</svg>").ToString();
    }

    /// <summary>A line over evenly spaced points, with its area filled, and the latest and largest values marked.</summary>
    public static string Line(IReadOnlyList<double> values, string title, string unit, string firstLabel)
    {
        var max = Math.Max(values.DefaultIfEmpty(0).Max(), 1e-9);
        var top = NiceCeiling(max);
        var plotWidth = Width - Left - 8;
        var plotHeight = Height - Top - Bottom;
        var step = plotWidth / (double)Math.Max(1, values.Count - 1);
        var svg = Open(title);
        Axis(svg, top, plotHeight, firstLabel);
        var points = new StringBuilder();
        for (var i = 0; i < values.Count; i++)
        {
            points.Append(Inv($"{Left + i * step:0.#},{Top + plotHeight - values[i] * plotHeight / top:0.#} "));
        }

        if (values.Count > 0)
        {
            svg.Append(Inv($"<polygon fill=\"#1565c022\" points=\"{Left},{Top + plotHeight} {points}{Left + (values.Count - 1) * step:0.#},{Top + plotHeight}\"/>"))
                .Append(Inv($"<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"1.5\" points=\"{points.ToString().TrimEnd()}\"/>"));
        }

        svg.Append(Inv($"<text x=\"{Width - 8}\" y=\"{Top + 10}\" font-size=\"10\" text-anchor=\"end\">now {values.LastOrDefault():0.##} {unit}, peak {values.DefaultIfEmpty(0).Max():0.##}</text>"));
        return svg.Append("</svg>").ToString();
    }

    /// <summary>1, 2 or 5 times a power of ten, at least <paramref name="value"/>: a readable axis top.</summary>
    public static double NiceCeiling(double value)
    {
        if (value <= 0)
        {
            return 1;
        }

        var power = Math.Pow(10, Math.Floor(Math.Log10(value)));
        foreach (var m in new[] { 1.0, 2, 5, 10 })
        {
            if (m * power >= value * (1 - 1e-12))
            {
                return m * power;
            }
        }

        return 10 * power;
    }

    private static StringBuilder Open(string title) =>
        new StringBuilder()
            .Append(Inv($"<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {Width} {Height}\" width=\"100%\" role=\"img\" aria-label=\""))
            .Append(WebUtility.HtmlEncode(title)).Append("\" font-family=\"system-ui, sans-serif\">")
            .Append("<title>").Append(WebUtility.HtmlEncode(title)).Append("</title>");

    private static void Axis(StringBuilder svg, double max, int plotHeight, string firstLabel)
    {
        svg.Append(Inv($"<line x1=\"{Left}\" y1=\"{Top}\" x2=\"{Left}\" y2=\"{Top + plotHeight}\" stroke=\"#999\"/>"))
            .Append(Inv($"<line x1=\"{Left}\" y1=\"{Top + plotHeight}\" x2=\"{Width - 8}\" y2=\"{Top + plotHeight}\" stroke=\"#999\"/>"))
            .Append(Inv($"<text x=\"{Left - 4}\" y=\"{Top + 8}\" font-size=\"10\" text-anchor=\"end\">{max:0.##}</text>"))
            .Append(Inv($"<text x=\"{Left - 4}\" y=\"{Top + plotHeight}\" font-size=\"10\" text-anchor=\"end\">0</text>"))
            .Append(Inv($"<text x=\"{Left}\" y=\"{Top + plotHeight + 12}\" font-size=\"10\">")).Append(WebUtility.HtmlEncode(firstLabel)).Append("</text>")
            .Append(Inv($"<text x=\"{Width - 8}\" y=\"{Top + plotHeight + 12}\" font-size=\"10\" text-anchor=\"end\">now</text>"));
    }

    private static string Inv(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
