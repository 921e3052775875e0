using System.Text.Json;

namespace LlmServing.Producer;

/// <summary>
/// What text the system can store. PostgreSQL's <c>text</c>, <c>varchar</c> and <c>jsonb</c> cannot hold a NUL
/// character (U+0000), so it is refused wherever text enters (a 422, or a batch line's own error) instead of
/// failing a write later.
/// </summary>
public static class TextInput
{
    public const string NulMessage = "contains a NUL character (\\u0000), which cannot be stored; remove it.";

    public static bool HasNul(string? text) => text is not null && text.Contains('\0', StringComparison.Ordinal);

    /// <summary>True when any string value or property name in the element contains a NUL.</summary>
    public static bool HasNul(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                return HasNul(element.GetString());
            case JsonValueKind.Array:
                foreach (var item in element.EnumerateArray())
                {
                    if (HasNul(item))
                    {
                        return true;
                    }
                }

                return false;
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    if (HasNul(property.Name) || HasNul(property.Value))
                    {
                        return true;
                    }
                }

                return false;
            default:
                return false;
        }
    }

    /// <summary>
    /// Answers 400 for a request whose path or query string holds a NUL (e.g. <c>?after=%00</c>), before any handler
    /// passes it to the database.
    /// </summary>
    public static WebApplication UseNulGuard(this WebApplication app)
    {
        app.Use(async (context, next) =>
        {
            var request = context.Request;
            if (HasNul(request.Path.Value) || request.Query.Any(q => HasNul(q.Key) || q.Value.Any(HasNul)))
            {
                await Results.Problem(statusCode: StatusCodes.Status400BadRequest, title: "Invalid character",
                    detail: "The path or query string " + NulMessage).ExecuteAsync(context);
                return;
            }

            await next(context);
        });
        return app;
    }
}
