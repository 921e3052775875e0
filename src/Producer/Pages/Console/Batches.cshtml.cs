using LlmServing.ResultStore.Batches;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Producer.Pages.Console;

public sealed class BatchesModel(ConsoleQueries queries, BatchLineStore lines) : ConsolePageModel
{
    public const int Limit = 50;

    public List<(Batch Batch, BatchCounts Counts)> Batches { get; } = [];

    public async Task OnGetAsync(CancellationToken ct)
    {
        foreach (var batch in await queries.BatchesAsync(Viewer.Scope, Limit, ct))
        {
            Batches.Add((batch, await lines.CountsAsync(batch.Id, ct)));
        }
    }
}
