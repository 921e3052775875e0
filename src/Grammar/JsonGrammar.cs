using System.Globalization;
using System.Text;
using System.Text.Json;

namespace LlmServing.Grammar;

/// <summary>A schema this system cannot turn into a grammar; <see cref="Keyword"/> names what is not supported.</summary>
public sealed class UnsupportedSchemaException(string keyword, string message) : Exception(message)
{
    /// <summary>The keyword (or part of the request) that cannot be honoured, to name in the 422.</summary>
    public string Keyword { get; } = keyword;
}

/// <summary>
/// Translates OpenAI's <c>response_format</c> into a llama.cpp grammar (GBNF), in our own code, so that nothing a
/// client writes reaches the worker's native grammar parser. JSON Schema support: objects (<c>properties</c>,
/// <c>required</c>; no other property is ever generated), strings (<c>enum</c>, <c>const</c>, <c>minLength</c>,
/// <c>maxLength</c>), integers, numbers, booleans, null, arrays (<c>items</c>, <c>minItems</c>, <c>maxItems</c>),
/// <c>anyOf</c> / <c>oneOf</c>, <c>$ref</c> to <c>#/$defs/...</c> or <c>#/definitions/...</c>, type lists, string
/// <c>format</c>s (<see cref="StringFormats"/>).
/// Annotations (<c>title</c>, <c>description</c>, ...) are ignored; any other keyword is refused, named. The
/// output is compact JSON (no whitespace between tokens), which every JSON parser reads. Pure: no engine.
/// </summary>
public static class JsonGrammar
{
    private static readonly HashSet<string> Annotations =
    [
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly",
        "additionalProperties", // only declared properties are generated, which satisfies any additionalProperties
        "strict",
    ];

    private static readonly HashSet<string> Structural =
    [
        "type", "properties", "required", "items", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions",
        "minLength", "maxLength", "minItems", "maxItems", "format",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    ];

    /// <summary>
    /// Compact JSON text of a value, with strings written as they are (only quotes, backslashes and control characters
    /// escaped), so that a model writes "🙂" rather than "\ud83d\ude42": both are valid JSON, the first is what models write.
    /// </summary>
    public static string JsonText(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => Quote(value.GetString()!),
        JsonValueKind.Array => "[" + string.Join(",", value.EnumerateArray().Select(JsonText)) + "]",
        JsonValueKind.Object => "{" + string.Join(",", value.EnumerateObject().Select(p => Quote(p.Name) + ":" + JsonText(p.Value))) + "}",
        _ => value.GetRawText(),
    };

    /// <summary>A JSON string (control characters as <c>\uXXXX</c>).</summary>
    private static string Quote(string text) => Escaped(text, c => $"\\u{(int)c:x4}");

    /// <summary>
    /// Text between double quotes with quotes, backslashes and control characters escaped, as JSON and GBNF both
    /// write them; they differ only in how another control character is spelled (<paramref name="control"/>).
    /// </summary>
    private static string Escaped(string text, Func<char, string> control)
    {
        var s = new StringBuilder("\"");
        foreach (var c in text)
        {
            s.Append(c switch
            {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                < ' ' => control(c),
                _ => c.ToString(),
            });
        }

        return s.Append('"').ToString();
    }

    // The char class also leaves out what is not a Unicode scalar value (surrogates, above U+10FFFF), which llama.cpp's
    // UTF-8 decoder would otherwise accept; the worker bans the byte tokens that start overlong sequences.
    private const string Common = """
        char ::= [^"\\\x7F\x00-\x1F\uD800-\uDFFF\U00110000-\U001FFFFF] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])
        string ::= "\"" char* "\""
        integer ::= "-"? ("0" | [1-9] [0-9]{0,15})
        number ::= integer ("." [0-9]{1,15})? ([eE] [-+]? [0-9]{1,3})?
        boolean ::= "true" | "false"
        null ::= "null"
        """;

    /// <summary>
    /// Any JSON object, bounded so that a generation can always close it: two levels of nesting (the values of the
    /// top object may be scalars, or objects and arrays of scalars), up to 8 members or items per level, strings of up
    /// to 32 characters.
    /// </summary>
    public static string ForAnyObject() => $$"""
        root ::= "{" (member ("," member){0,7})? "}"
        member ::= shortstring ":" value
        value ::= inner | list | scalar
        inner ::= "{" (shortstring ":" scalar ("," shortstring ":" scalar){0,7})? "}"
        list ::= "[" (scalar ("," scalar){0,7})? "]"
        scalar ::= shortstring | number | boolean | null
        shortstring ::= "\"" char{0,32} "\""
        {{Common}}
        """;

    /// <summary>The grammar of a JSON Schema; throws <see cref="UnsupportedSchemaException"/> naming what it cannot honour.</summary>
    public static string ForSchema(JsonElement schema)
    {
        var builder = new Builder(schema);
        var root = builder.Rule(schema, "root");
        var text = new StringBuilder();
        if (root != "root")
        {
            text.Append("root ::= ").Append(root).Append('\n');
        }

        foreach (var (name, body) in builder.Rules)
        {
            text.Append(name).Append(" ::= ").Append(body).Append('\n');
        }

        var written = new HashSet<string>(StringComparer.Ordinal);
        foreach (var rule in builder.Formats.SelectMany(StringFormats.RulesOf))
        {
            if (written.Add(rule[..rule.IndexOf(" ::=", StringComparison.Ordinal)]))
            {
                text.Append(rule.TrimEnd()).Append('\n');
            }
        }

        return text.Append(Common).ToString();
    }

    /// <summary>A GBNF string literal for exact text (control characters as <c>\xXX</c>).</summary>
    public static string Literal(string text) => Escaped(text, c => $"\\x{(int)c:X2}");

    private sealed class Builder(JsonElement document)
    {
        private const int MaxRules = 2000;

        /// <summary>Deepest nesting of schemas (properties, items, unions and <c>$ref</c> chains) translated.</summary>
        public const int MaxDepth = 64;

        private readonly Dictionary<string, string> _refs = new(StringComparer.Ordinal);
        private int _next;
        private int _depth;

        public List<(string Name, string Body)> Rules { get; } = [];

        /// <summary>The string formats used, whose rules follow the schema's.</summary>
        public SortedSet<string> Formats { get; } = new(StringComparer.Ordinal);

        /// <summary>Returns a rule name (or an inline expression) that matches the schema.</summary>
        public string Rule(JsonElement schema, string? name = null)
        {
            Enter("schema");
            try
            {
                return RuleWithin(schema, name);
            }
            finally
            {
                _depth--;
            }
        }

        /// <summary>One level deeper; refuses the schema past <see cref="MaxDepth"/> or <see cref="MaxRules"/>.</summary>
        private void Enter(string keyword)
        {
            if (Rules.Count > MaxRules)
            {
                throw new UnsupportedSchemaException("schema", $"The schema is too large: more than {MaxRules} grammar rules.");
            }

            if (++_depth > MaxDepth)
            {
                _depth--;
                throw new UnsupportedSchemaException(keyword, $"The schema nests more than {MaxDepth} levels deep (through properties, items, anyOf/oneOf or '$ref').");
            }
        }

        private string RuleWithin(JsonElement schema, string? name)
        {
            if (schema.ValueKind == JsonValueKind.True)
            {
                throw new UnsupportedSchemaException("true", "A schema of 'true' (anything) cannot be generated; give a type.");
            }

            if (schema.ValueKind != JsonValueKind.Object)
            {
                throw new UnsupportedSchemaException("schema", "Every schema must be a JSON object.");
            }

            foreach (var property in schema.EnumerateObject())
            {
                if (!Annotations.Contains(property.Name) && !Structural.Contains(property.Name))
                {
                    throw new UnsupportedSchemaException(property.Name, $"The JSON Schema keyword '{property.Name}' is not supported.");
                }
            }

            var body = Body(schema);
            if (name is null && IsSimple(body))
            {
                return body;
            }

            name ??= $"r{++_next}";
            Rules.Add((name, body));
            return name;
        }

        private static bool AllowsFormat(JsonElement schema) =>
            !schema.TryGetProperty("enum", out _) && !schema.TryGetProperty("const", out _) && !schema.TryGetProperty("$ref", out _)
            && schema.TryGetProperty("type", out var type)
            && (type.ValueKind == JsonValueKind.String ? type.GetString() == "string"
                : type.ValueKind == JsonValueKind.Array && type.EnumerateArray().Any(t => t.ValueKind == JsonValueKind.String && t.GetString() == "string"));

        private static bool IsSimple(string body) => body is "string" or "integer" or "number" or "boolean" or "null";

        private string Body(JsonElement schema)
        {
            if (schema.TryGetProperty("format", out _) && !AllowsFormat(schema))
            {
                throw new UnsupportedSchemaException("format", "'format' is supported on strings only (type \"string\", without 'enum' or 'const').");
            }

            if (schema.TryGetProperty("$ref", out var reference))
            {
                return reference.ValueKind == JsonValueKind.String
                    ? Reference(reference.GetString()!)
                    : throw new UnsupportedSchemaException("$ref", "'$ref' must be a string.");
            }

            if (schema.TryGetProperty("const", out var constant))
            {
                return Literal(Compact(constant));
            }

            if (schema.TryGetProperty("enum", out var values))
            {
                if (values.ValueKind != JsonValueKind.Array || values.GetArrayLength() is 0 or > 500)
                {
                    throw new UnsupportedSchemaException("enum", "'enum' must be an array of 1 to 500 values.");
                }

                return "(" + string.Join(" | ", values.EnumerateArray().Select(v => Literal(Compact(v)))) + ")";
            }

            foreach (var union in new[] { "anyOf", "oneOf" })
            {
                if (schema.TryGetProperty(union, out var branches))
                {
                    if (branches.ValueKind != JsonValueKind.Array || branches.GetArrayLength() == 0)
                    {
                        throw new UnsupportedSchemaException(union, $"'{union}' must be a non-empty array of schemas.");
                    }

                    return "(" + string.Join(" | ", branches.EnumerateArray().Select(b => Rule(b))) + ")";
                }
            }

            if (!schema.TryGetProperty("type", out var type))
            {
                throw new UnsupportedSchemaException("type", "Every schema needs 'type' (or 'enum', 'const', 'anyOf', 'oneOf', '$ref').");
            }

            if (type.ValueKind == JsonValueKind.Array && type.GetArrayLength() > 0 && type.EnumerateArray().All(t => t.ValueKind == JsonValueKind.String))
            {
                return "(" + string.Join(" | ", type.EnumerateArray().Select(t => TypeBody(schema, t.GetString()!))) + ")";
            }

            return type.ValueKind == JsonValueKind.String
                ? TypeBody(schema, type.GetString()!)
                : throw new UnsupportedSchemaException("type", "'type' must be a type name or a non-empty array of them.");
        }

        private string TypeBody(JsonElement schema, string type) => type switch
        {
            "object" => Object(schema),
            "array" => Array(schema),
            "string" => String(schema),
            "integer" => Integer(schema),
            "number" => Bounded(schema) is { } bound
                ? throw new UnsupportedSchemaException(bound, $"'{bound}' on a number is not supported (integers take bounds exactly); use type \"integer\" or drop the bound.")
                : type,
            "boolean" or "null" => type,
            _ => throw new UnsupportedSchemaException("type", $"Unknown type '{type}'."),
        };

        private string Object(JsonElement schema)
        {
            if (schema.TryGetProperty("required", out var r) && (r.ValueKind != JsonValueKind.Array || r.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.String)))
            {
                throw new UnsupportedSchemaException("required", "'required' must be an array of property names.");
            }

            var required = r.ValueKind == JsonValueKind.Array
                ? r.EnumerateArray().Select(x => x.GetString()!).ToHashSet(StringComparer.Ordinal)
                : [];
            var members = new List<(string Member, bool Required)>();
            var declared = new HashSet<string>(StringComparer.Ordinal);
            if (schema.TryGetProperty("properties", out var properties))
            {
                if (properties.ValueKind != JsonValueKind.Object)
                {
                    throw new UnsupportedSchemaException("properties", "'properties' must be an object of schemas.");
                }

                foreach (var property in properties.EnumerateObject())
                {
                    declared.Add(property.Name);
                    members.Add(($"{Literal(Quote(property.Name))} \":\" {Rule(property.Value)}", required.Contains(property.Name)));
                }
            }

            var missing = required.Where(name => !declared.Contains(name)).ToList();
            if (missing.Count > 0)
            {
                throw new UnsupportedSchemaException("required", $"'required' names '{missing[0]}', which is not in 'properties'.");
            }

            // Required members first, in their declared order; then each optional one may follow.
            var mandatory = members.Where(m => m.Required).Select(m => m.Member).ToList();
            var optional = members.Where(m => !m.Required).Select(m => m.Member).ToList();
            if (mandatory.Count > 0)
            {
                return "\"{\" " + string.Join(" \",\" ", mandatory) + string.Concat(optional.Select(o => $" (\",\" {o})?")) + " \"}\"";
            }

            if (optional.Count == 0)
            {
                return "\"{\" \"}\"";
            }

            return OptionalOnly(optional);
        }

        private string OptionalOnly(List<string> optional)
        {
            // No required member: the first present one carries no comma, and each may be followed by any of the later
            // ones. Writing each alternative's tail out in full made the grammar grow with the square of the members
            // (a 32 KB schema took 9 s and 942 MB to translate). The tails are rules instead: the members in chunks of
            // TailChunk, tail(i) the optional members from i to the end of its chunk followed by the next chunks' rule.
            // Every rule starts with a group that may be empty, so llama.cpp walks these rules recursively: chunking
            // keeps that walk at most TailChunk + members / TailChunk deep instead of one level per member.
            var chunks = (optional.Count + TailChunk - 1) / TailChunk;
            var chunkRules = new string[chunks + 1];
            for (var j = chunks - 1; j >= 1; j--)
            {
                var groups = string.Join(" ", optional.Skip(j * TailChunk).Take(TailChunk).Select(o => $"(\",\" {o})?"));
                chunkRules[j] = $"r{++_next}";
                Rules.Add((chunkRules[j], j + 1 < chunks ? $"{groups} {chunkRules[j + 1]}" : groups));
            }

            var tails = new string?[optional.Count + 1];
            string After(int i) => i + 1 >= optional.Count ? "" : (i + 1) % TailChunk == 0 ? " " + chunkRules[(i + 1) / TailChunk] : " " + tails[i + 1];
            for (var i = optional.Count - 1; i >= 1; i--)
            {
                if (i % TailChunk != 0)
                {
                    tails[i] = $"r{++_next}";
                    Rules.Add((tails[i]!, $"(\",\" {optional[i]})?{After(i)}"));
                }
            }

            var alternatives = Enumerable.Range(0, optional.Count).Select(i => optional[i] + After(i));
            return "\"{\" (" + string.Join(" | ", alternatives) + ")? \"}\"";
        }

        private string Array(JsonElement schema)
        {
            if (!schema.TryGetProperty("items", out var items))
            {
                throw new UnsupportedSchemaException("items", "An array schema needs 'items'.");
            }

            var item = Rule(items);
            var min = Count(schema, "minItems") ?? 0;
            var max = Count(schema, "maxItems");
            if (max < min)
            {
                throw new UnsupportedSchemaException("maxItems", "'maxItems' is below 'minItems'.");
            }

            var tail = max is { } m ? $"{{{Math.Max(0, min - 1)},{Math.Max(0, m - 1)}}}" : $"{{{Math.Max(0, min - 1)},}}";
            if (max == 0)
            {
                return "\"[\" \"]\"";
            }

            var list = max == 1 ? item : $"{item} (\",\" {item}){tail}";
            return min == 0 ? $"\"[\" ({list})? \"]\"" : $"\"[\" {list} \"]\"";
        }

        /// <summary>Optional members per tail rule of an object without required members.</summary>
        private const int TailChunk = 32;

        /// <summary>llama.cpp refuses a repetition of 2000 or more.</summary>
        private const int MaxStringLength = 1999;

        private string String(JsonElement schema)
        {
            var min = Count(schema, "minLength");
            var max = Count(schema, "maxLength");
            if (schema.TryGetProperty("format", out var format))
            {
                return Format(format, min is not null || max is not null);
            }

            if (min is null && max is null)
            {
                return "string";
            }

            if (max < (min ?? 0))
            {
                throw new UnsupportedSchemaException("maxLength", "'maxLength' is below 'minLength'.");
            }

            foreach (var (keyword, value) in new[] { ("minLength", min), ("maxLength", max) })
            {
                if (value > MaxStringLength)
                {
                    throw new UnsupportedSchemaException(keyword, $"'{keyword}' can be at most {MaxStringLength} (llama.cpp's repetition limit).");
                }
            }

            return $"\"\\\"\" char{{{min ?? 0},{(max is { } m ? m.ToString(CultureInfo.InvariantCulture) : "")}}} \"\\\"\"";
        }

        private static readonly string[] Bounds = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];

        private static string? Bounded(JsonElement schema) => Bounds.FirstOrDefault(b => schema.TryGetProperty(b, out _));

        /// <summary>An integer, within its bounds when it has any (<see cref="IntegerRange"/>: exact digit ranges).</summary>
        private static string Integer(JsonElement schema)
        {
            if (Bounded(schema) is null)
            {
                return "integer";
            }

            long? min = null, max = null;
            foreach (var keyword in Bounds)
            {
                if (!schema.TryGetProperty(keyword, out var value))
                {
                    continue;
                }

                if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out var bound) || Math.Abs(bound) > IntegerRange.Limit)
                {
                    throw new UnsupportedSchemaException(keyword, $"'{keyword}' must be a number of at most 16 digits.");
                }

                // The integers a bound allows: ceil of a minimum, floor of a maximum; an exclusive bound moves one past.
                // Whole bounds are read exactly (a double holds integers exactly only up to 2^53).
                var whole = value.TryGetInt64(out var exact);
                var floor = whole ? exact : (long)Math.Floor(bound);
                var ceiling = whole ? exact : (long)Math.Ceiling(bound);
                switch (keyword)
                {
                    case "minimum": min = Math.Max(min ?? long.MinValue, ceiling); break;
                    case "exclusiveMinimum": min = Math.Max(min ?? long.MinValue, floor + 1); break;
                    case "maximum": max = Math.Min(max ?? long.MaxValue, floor); break;
                    default: max = Math.Min(max ?? long.MaxValue, ceiling - 1); break;
                }
            }

            if (min > max)
            {
                throw new UnsupportedSchemaException("maximum", $"No integer lies within the bounds (from {min} to {max}).");
            }

            return "(" + IntegerRange.Expression(min, max) + ")";
        }

        /// <summary>A string of a <c>format</c> (<see cref="StringFormats"/>); refused when unknown or combined with a length.</summary>
        private string Format(JsonElement format, bool withLength)
        {
            var name = format.ValueKind == JsonValueKind.String ? format.GetString()! : "";
            if (!StringFormats.Supported.Contains(name))
            {
                throw new UnsupportedSchemaException("format",
                    $"The string format '{name}' is not supported; supported: {string.Join(", ", StringFormats.Supported)}.");
            }

            if (withLength)
            {
                throw new UnsupportedSchemaException("format", $"A string with 'format' '{name}' cannot also have 'minLength' or 'maxLength'.");
            }

            Formats.Add(name);
            return $"\"\\\"\" {StringFormats.RuleName(name)} \"\\\"\"";
        }

        private string Reference(string reference)
        {
            if (_refs.TryGetValue(reference, out var existing))
            {
                return existing;
            }

            string[] prefixes = ["#/$defs/", "#/definitions/"];
            var prefix = prefixes.FirstOrDefault(p => reference.StartsWith(p, StringComparison.Ordinal))
                         ?? throw new UnsupportedSchemaException("$ref", $"'$ref' must point into '#/$defs/' or '#/definitions/'; got '{reference}'.");
            var key = reference[prefix.Length..];
            var container = document.TryGetProperty(prefix[2..^1], out var defs) ? defs : default;
            if (container.ValueKind != JsonValueKind.Object || !container.TryGetProperty(key, out var target))
            {
                throw new UnsupportedSchemaException("$ref", $"'$ref' points to '{reference}', which is not defined.");
            }

            var name = $"def{++_next}";
            _refs[reference] = name; // before the body: a definition may refer to itself
            Rules.Add((name, "")); // reserve the position
            var index = Rules.Count - 1;
            Enter("$ref");
            try
            {
                Rules[index] = (name, Body(target));
            }
            finally
            {
                _depth--;
            }

            return name;
        }

        private static int? Count(JsonElement schema, string keyword)
        {
            if (!schema.TryGetProperty(keyword, out var value))
            {
                return null;
            }

            if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out var n) || n < 0 || n > 10_000)
            {
                throw new UnsupportedSchemaException(keyword, $"'{keyword}' must be an integer from 0 to 10000.");
            }

            return n;
        }

        private static string Compact(JsonElement value) => JsonText(value);
    }
}
