using Microsoft.AspNetCore.Mvc;
using LlmServing.Producer.Application;
using LlmServing.Producer.Messaging;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Producer.Pages.Console;

/// <summary>The confirmation step (works without script), then the replay or discard of one dead letter.</summary>
public sealed class DeadLetterModel(BrokerConsole broker, ConsoleQueries queries, ReplayDeadLetter replay) : ConsolePageModel
{
    [BindProperty(SupportsGet = true)] public string Queue { get; set; } = "";
    [BindProperty(SupportsGet = true)] public string Message { get; set; } = "";
    [BindProperty(SupportsGet = true)] public string Action { get; set; } = "";

    public DeadLetter? Letter { get; private set; }

    public string? JobStatus { get; private set; }

    public async Task<IActionResult> OnGetAsync(CancellationToken ct)
    {
        if (RequireAdmin() is { } forbidden)
        {
            return forbidden;
        }

        if (!Valid())
        {
            return BadRequest("Unknown error queue or action.");
        }

        Letter = (await broker.PeekAsync(Queue, ct)).FirstOrDefault(l => l.MessageId == Message);
        if (Letter?.JobId is { } id)
        {
            JobStatus = (await queries.JobAsync(null, id, ct))?.Status ?? "deleted";
        }

        return Page();
    }

    public async Task<IActionResult> OnPostAsync(CancellationToken ct)
    {
        if (RequireAdmin() is { } forbidden)
        {
            return forbidden;
        }

        if (!Valid())
        {
            return BadRequest("Unknown error queue or action.");
        }

        var notice = await replay.HandleAsync(Queue, Message, discard: Action == "discard", ct);
        return Back("/console/dead-letters", notice);
    }

    private bool Valid() => broker.ErrorQueues.Contains(Queue) && Action is "replay" or "discard";
}
