using LlmServing.Producer.OperatorConsole;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Mvc.RazorPages;

namespace LlmServing.Producer.Pages.Console;

public sealed class LoginModel(ConsoleSession session) : PageModel
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
        if (await session.SignInAsync(HttpContext, key ?? "", ct) is null)
        {
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
