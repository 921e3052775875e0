using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Mvc.RazorPages;

namespace LlmServing.Producer.OperatorConsole;

/// <summary>The console's pages: who is looking, and the admin-only guard.</summary>
public abstract class ConsolePageModel : PageModel
{
    /// <summary>The signed-in user (the console's middleware lets no one else through).</summary>
    public ConsoleUser Viewer => ConsoleSession.Current(HttpContext) ?? throw new InvalidOperationException("Not signed in.");

    /// <summary>A message for the next page (after a post, redirect, get), carried in the query string.</summary>
    [BindProperty(SupportsGet = true, Name = "notice")]
    public string? Notice { get; set; }

    /// <summary>True when the page answered 403 (a tenant key on an admin page).</summary>
    public bool Forbidden { get; private set; }

    protected IActionResult? RequireAdmin()
    {
        if (Viewer.IsAdmin)
        {
            return null;
        }

        Forbidden = true;
        Response.StatusCode = StatusCodes.Status403Forbidden;
        return Page();
    }

    /// <summary>Redirects to a console path with a notice shown there.</summary>
    protected IActionResult Back(string path, string notice) =>
        Redirect(path + (path.Contains('?') ? "&" : "?") + "notice=" + Uri.EscapeDataString(notice));

    public static string Ago(DateTimeOffset? at)
    {
        if (at is null)
        {
            return "";
        }

        var age = DateTimeOffset.UtcNow - at.Value;
        return age.TotalSeconds < 60 ? $"{Math.Max(0, (int)age.TotalSeconds)} s ago"
            : age.TotalMinutes < 60 ? $"{(int)age.TotalMinutes} min ago"
            : age.TotalHours < 48 ? $"{(int)age.TotalHours} h ago"
            : $"{(int)age.TotalDays} d ago";
    }

    /// <summary>A job or batch status as a coloured badge.</summary>
    public static Microsoft.AspNetCore.Html.HtmlString Badge(string status)
    {
        var text = System.Net.WebUtility.HtmlEncode(status);
        return new Microsoft.AspNetCore.Html.HtmlString(
            $"<span class=\"badge\" data-status=\"{text}\" style=\"background:{SvgCharts.Colour(status)}\">{text}</span>");
    }

    public static string Time(DateTimeOffset? at) => at?.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss") + (at is null ? "" : " UTC");
}
