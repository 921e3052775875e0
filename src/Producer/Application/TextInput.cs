using System.Text.Json;

namespace LlmServing.Producer.Application;

/// <summary>
/// What text the system can store. PostgreSQL's <c>text</c>, <c>varchar</c> and <c>jsonb</c> cannot hold a NUL
/// character (U+0000), and UTF-8 cannot hold a lone UTF-16 surrogate (<c>"\\ud800"</c> without its pair, which
/// System.Text.Json accepts), so both are refused wherever text enters (a 422, a 400 for a query string, or a batch
/// line's own error) instead of failing a write later.
/// </summary>
public static class TextInput
{
    public const string NulMessage = "contains a NUL character (\\u0000), which cannot be stored; remove it.";

    public const string SurrogateMessage = "contains a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is not text; remove it.";

    /// <summary>Why the text cannot be stored (to follow the field's name), or null when it can.</summary>
    public static string? Problem(string? text) =>
        text is null ? null
        : text.Contains('\0', StringComparison.Ordinal) ? NulMessage
        : HasLoneSurrogate(text) ? SurrogateMessage
        : null;

    /// <summary>True when the text holds a NUL or a lone surrogate (the name is older than the second rule).</summary>
    public static bool HasNul(string? text) => Problem(text) is not null;

    /// <summary>Why the element cannot be stored, or null: the first string value or property name that cannot.</summary>
    public static string? Problem(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                SafeString(element, out var problem);
                return problem;
            case JsonValueKind.Array:
                foreach (var item in element.EnumerateArray())
                {
                    if (Problem(item) is { } inItem)
                    {
                        return inItem;
                    }
                }

                return null;
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    if ((NameProblem(property) ?? Problem(property.Value)) is { } inProperty)
                    {
                        return inProperty;
                    }
                }

                return null;
            default:
                return null;
        }
    }

    /// <summary>True when any string value or property name in the element contains a NUL or a lone surrogate.</summary>
    public static bool HasNul(JsonElement element) => Problem(element) is not null;

    private static string? NameProblem(JsonProperty property)
    {
        try
        {
            return Problem(property.Name);
        }
        catch (InvalidOperationException)
        {
            return SurrogateMessage; // a name whose escape decodes to no valid UTF-16
        }
    }

    private static bool HasLoneSurrogate(string text)
    {
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(c))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// The first string or property name of a JSON document that cannot be stored, with the field to name: the top-level
    /// property (<c>prompt</c>, <c>stop</c>, <c>response_format</c>), or an array item's property
    /// (<c>messages[0].content</c>); null when every string can be stored, or when the JSON is malformed (the
    /// deserializer names that). Read before deserializing, so that no handler meets a string it cannot read.
    /// </summary>
    public static (string Field, string Problem)? FirstUnstorable(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json);
        var frames = new List<Frame>(); // one per open object or array; an object's Name is its current property
        try
        {
            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.StartObject or JsonTokenType.StartArray:
                        Advance(frames);
                        frames.Add(new Frame(reader.TokenType == JsonTokenType.StartArray));
                        break;
                    case JsonTokenType.EndObject or JsonTokenType.EndArray:
                        frames.RemoveAt(frames.Count - 1);
                        break;
                    case JsonTokenType.PropertyName:
                        var name = ReadString(ref reader, out var nameProblem);
                        if (nameProblem is not null)
                        {
                            return (Field(frames), nameProblem);
                        }

                        frames[^1].Name = name;
                        break;
                    case JsonTokenType.String:
                        Advance(frames);
                        ReadString(ref reader, out var problem);
                        if (problem is not null)
                        {
                            return (Field(frames), problem);
                        }

                        break;
                    default:
                        Advance(frames);
                        break;
                }
            }
        }
        catch (JsonException)
        {
            return null; // malformed: the deserializer says where
        }

        return null;

        static void Advance(List<Frame> frames)
        {
            if (frames.Count > 0 && frames[^1].IsArray)
            {
                frames[^1].Index++;
            }
        }
    }

    private sealed class Frame(bool isArray)
    {
        public bool IsArray { get; } = isArray;

        public int Index { get; set; } = -1;

        public string? Name { get; set; }
    }

    /// <summary><c>prompt</c>, <c>stop</c>, or <c>messages[0].content</c>: a top-level field, or a property of an item of a top-level array.</summary>
    private static string Field(List<Frame> frames)
    {
        if (frames.Count == 0 || frames[0].IsArray || frames[0].Name is not { } top)
        {
            return "body";
        }

        return frames.Count >= 3 && frames[1].IsArray && !frames[2].IsArray && frames[2].Name is { } inner
            ? $"{top}[{frames[1].Index}].{inner}"
            : top;
    }

    private static string? ReadString(ref Utf8JsonReader reader, out string? problem)
    {
        try
        {
            var text = reader.GetString();
            problem = Problem(text);
            return text;
        }
        catch (InvalidOperationException)
        {
            problem = SurrogateMessage; // an escape that decodes to no valid UTF-16
            return null;
        }
    }

    /// <summary>A JSON string's value, or null with the problem when it cannot be read as text.</summary>
    private static string? SafeString(JsonElement element, out string? problem)
    {
        try
        {
            var text = element.GetString();
            problem = Problem(text);
            return text;
        }
        catch (InvalidOperationException)
        {
            problem = SurrogateMessage;
            return null;
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
            var problem = Problem(request.Path.Value)
                          ?? request.Query.SelectMany(q => q.Value.Prepend(q.Key)).Select(Problem).FirstOrDefault(p => p is not null);
            if (problem is not null)
            {
                await Results.Problem(statusCode: StatusCodes.Status400BadRequest, title: "Invalid character",
                    detail: "The path or query string " + problem).ExecuteAsync(context);
                return;
            }

            await next(context);
        });
        return app;
    }
}
