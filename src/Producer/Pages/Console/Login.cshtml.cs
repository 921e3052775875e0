using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Mvc.RazorPages;
using LlmServing.Producer.Application;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Producer.Pages.Console;

public sealed class LoginModel(ConsoleSession session, InvalidKeyLimiter failures) : PageModel
{
    [BindProperty(SupportsGet = true, Name = "return_to")]
    public string? ReturnTo { get; set; }

    public string? Error { get; private set; }

    public bool KeysOff => session.KeysOff;

    public void OnGet()
    {
    }

    public async Task<IActionResult> OnPostAsync([FromForm] string? key, CancellationToken ct)
    {
        // The same guard as the API's: an address that keeps sending unknown keys is refused for a while, except for
        // the admin key and active keys.
        var address = HttpContext.Connection.RemoteIpAddress?.ToString() ?? "unknown";
        if (!session.IsAdminKey(key ?? "") && !await failures.MayLookUpAsync(address, (key ?? "").Trim(), ct))
        {
            Error = $"More than {InvalidKeyLimiter.PerMinute} unknown keys from this address in a minute; try again later.";
            Response.StatusCode = StatusCodes.Status429TooManyRequests;
            Response.Headers.RetryAfter = "60";
            return Page();
        }

        if (await session.SignInAsync(HttpContext, key ?? "", ct) is null)
        {
            failures.Count(address);
            Error = "That key is not the admin key or an active API key.";
            Response.StatusCode = StatusCodes.Status401Unauthorized;
            return Page();
        }

        // Only a path of the console itself: never an address elsewhere.
        var target = ReturnTo is { } r && r.StartsWith("/console", StringComparison.Ordinal) && !r.StartsWith("//", StringComparison.Ordinal) ? r : "/console";
        return LocalRedirect(target);
    }

    public IActionResult OnPostSignout()
    {
        ConsoleSession.SignOut(HttpContext);
        return LocalRedirect("/console/login");
    }
}
