using LlmServing.Contracts;
using LlmServing.Producer.Messaging;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Producer.Pages.Console;

public sealed class IndexModel(ConsoleQueries queries, BrokerConsole broker) : ConsolePageModel
{
    private static readonly string[] Stacked = [JobStatuses.Succeeded, JobStatuses.Failed, JobStatuses.Cancelled, JobStatuses.Expired];

    public OverviewData Data { get; private set; } = null!;

    /// <summary>The broker's lanes: for the admin only (a tenant sees its own jobs, not the shared queues).</summary>
    public IReadOnlyList<LaneDepth>? Lanes { get; private set; }

    public long FinishedLastHour => Data.Finished.Sum(b => b.Jobs);

    public string StatusChart { get; private set; } = "";

    public string TokenChart { get; private set; } = "";

    public async Task OnGetAsync(CancellationToken ct)
    {
        Data = await queries.OverviewAsync(Viewer.Scope, ct);
        if (Viewer.IsAdmin)
        {
            Lanes = await broker.DepthsAsync(ct);
        }

        var buckets = Enumerable.Range(0, ConsoleQueries.Buckets)
            .Select(i => (IReadOnlyDictionary<string, long>)Data.Finished.Where(b => b.Bucket == i).ToDictionary(b => b.Status, b => b.Jobs))
            .ToList();
        StatusChart = SvgCharts.StackedBars(buckets, Stacked, "Jobs finished per 5 minutes, by status", "-60 min");
        TokenChart = SvgCharts.Line(Data.TokensPerSecond, "Tokens per second, per minute", "tokens/s", "-60 min");
    }
}
