using System.Text.Json;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.ResultStore.Jobs;
using Microsoft.AspNetCore.Mvc;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Producer.Pages.Console;

public sealed class JobModel(ConsoleQueries queries, JobStore jobs) : ConsolePageModel
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    [BindProperty(SupportsGet = true)] public Guid Id { get; set; }

    public Job? Job { get; private set; }

    public string RequestJson { get; private set; } = "";

    public async Task OnGetAsync(CancellationToken ct)
    {
        Job = await queries.JobAsync(Viewer.Scope, Id, ct);
        if (Job is null)
        {
            Response.StatusCode = StatusCodes.Status404NotFound;
            return;
        }

        try
        {
            RequestJson = JsonNode.Parse(Job.Request)?.ToJsonString(Indented) ?? Job.Request;
        }
        catch (JsonException)
        {
            RequestJson = Job.Request;
        }
    }

    /// <summary>Cancels as <c>POST /v1/jobs/{id}/cancel</c> does: a queued job at once, a running one at its next step.</summary>
    public async Task<IActionResult> OnPostCancelAsync(CancellationToken ct)
    {
        var job = await queries.JobAsync(Viewer.Scope, Id, ct);
        if (job is null)
        {
            return NotFound();
        }

        var path = $"/console/jobs/{Id}";
        if (JobStatuses.IsFinal(job.Status))
        {
            return Back(path, $"The job already ended ({job.Status}).");
        }

        var after = await jobs.CancelAsync(Id, job.TenantId, ct);
        return Back(path, after?.Status == JobStatuses.Cancelled
            ? "Cancelled."
            : after is { Status: JobStatuses.Running } ? "Cancel requested: the worker stops the job at its next step." : $"The job ended first ({after?.Status}).");
    }

    public static string Since(DateTimeOffset from, DateTimeOffset? to) =>
        to is { } t ? $"+{(t - from).TotalSeconds:0.###} s" : "";
}
