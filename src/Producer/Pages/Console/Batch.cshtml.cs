using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Files;
using Microsoft.AspNetCore.Mvc;
using LlmServing.Producer.Application;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Producer.Pages.Console;

public sealed class BatchModel(ConsoleQueries queries, CancelBatch cancel, BatchLineStore lines, FileStore files) : ConsolePageModel
{
    [BindProperty(SupportsGet = true)] public string Id { get; set; } = "";

    public Batch? Batch { get; private set; }

    public BatchCounts? Counts { get; private set; }

    public static bool IsOpen(string status) =>
        status is BatchStatuses.Validating or BatchStatuses.InProgress or BatchStatuses.Finalizing or BatchStatuses.Cancelling;

    public async Task OnGetAsync(CancellationToken ct)
    {
        Batch = await queries.BatchAsync(Viewer.Scope, Id, ct);
        if (Batch is null)
        {
            Response.StatusCode = StatusCodes.Status404NotFound;
            return;
        }

        Counts = await lines.CountsAsync(Id, ct);
    }

    /// <summary>Downloads the batch's input, output or error file (only files of this batch).</summary>
    public async Task<IActionResult> OnGetFileAsync(string file, CancellationToken ct)
    {
        var batch = await queries.BatchAsync(Viewer.Scope, Id, ct);
        if (batch is null || (file != batch.InputFileId && file != batch.OutputFileId && file != batch.ErrorFileId))
        {
            return NotFound();
        }

        var stored = await files.FindAsync(file, batch.TenantId, ct);
        if (stored is null)
        {
            return NotFound(); // expired by retention
        }

        return File(files.OpenRead(stored.Id), "application/jsonl", stored.Filename);
    }

    /// <summary>Cancels as <c>POST /v1/batches/{id}/cancel</c> does.</summary>
    public async Task<IActionResult> OnPostCancelAsync(CancellationToken ct)
    {
        var batch = await queries.BatchAsync(Viewer.Scope, Id, ct);
        if (batch is null)
        {
            return NotFound();
        }

        var path = $"/console/batches/{Id}";
        if (batch.Status is not (BatchStatuses.Validating or BatchStatuses.InProgress))
        {
            return Back(path, $"The batch is {batch.Status}; only a validating or running batch can be cancelled.");
        }

        await cancel.RunAsync(Id, batch.TenantId, ct);

        return Back(path, "Cancelling: queued lines are cancelled, running ones stop at their next step.");
    }
}
