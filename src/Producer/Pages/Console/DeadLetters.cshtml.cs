using Microsoft.AspNetCore.Mvc;
using LlmServing.Producer.Messaging;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Producer.Pages.Console;

public sealed class DeadLettersModel(BrokerConsole broker) : ConsolePageModel
{
    public List<(string Queue, IReadOnlyList<DeadLetter> Letters)> Queues { get; } = [];

    public async Task<IActionResult> OnGetAsync(CancellationToken ct)
    {
        if (RequireAdmin() is { } forbidden)
        {
            return forbidden;
        }

        foreach (var queue in broker.ErrorQueues)
        {
            Queues.Add((queue, await broker.PeekAsync(queue, ct)));
        }

        return Page();
    }
}
