using System.Globalization;
using LlmServing.ResultStore.Jobs;
using Microsoft.AspNetCore.Mvc;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Producer.Pages.Console;

public sealed class JobsModel(ConsoleQueries queries) : ConsolePageModel
{
    public const int Limit = 100;

    [BindProperty(SupportsGet = true)] public string? Id { get; set; }
    [BindProperty(SupportsGet = true)] public string? Status { get; set; }
    [BindProperty(SupportsGet = true)] public string? Tenant { get; set; }
    [BindProperty(SupportsGet = true)] public string? Batch { get; set; }
    [BindProperty(SupportsGet = true)] public string? From { get; set; }
    [BindProperty(SupportsGet = true)] public string? To { get; set; }

    public List<Job> Jobs { get; private set; } = [];

    public string? Error { get; private set; }

    public async Task OnGetAsync(CancellationToken ct)
    {
        Guid? id = null;
        if (!string.IsNullOrWhiteSpace(Id))
        {
            if (!Guid.TryParse(Id.Trim(), out var parsed))
            {
                Error = $"'{Id}' is not a job id.";
                return;
            }

            id = parsed;
        }

        if (!TryTime(From, out var from) || !TryTime(To, out var to))
        {
            Error = "Times are dates and times in UTC, such as 2026-11-28T10:00.";
            return;
        }

        var status = string.IsNullOrEmpty(Status) ? null : Status;
        if (status is not null && !Contracts.JobStatuses.All.Contains(status))
        {
            Error = $"'{Status}' is not a job status.";
            return;
        }

        Jobs = await queries.JobsAsync(Viewer.Scope, new JobQuery(id, status, Viewer.IsAdmin ? Tenant?.Trim() : null, from, to, Batch?.Trim()), Limit, ct);
    }

    private static bool TryTime(string? text, out DateTimeOffset? at)
    {
        at = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            return true;
        }

        if (DateTime.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var parsed))
        {
            at = new DateTimeOffset(parsed, TimeSpan.Zero);
            return true;
        }

        return false;
    }
}
