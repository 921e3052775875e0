namespace LlmServing.Grammar;

/// <summary>
/// JSON Schema's string <c>format</c>s as grammars that only write valid values: what Pydantic emits for
/// <c>datetime</c>, <c>date</c>, <c>time</c>, <c>timedelta</c>, <c>UUID</c>, <c>EmailStr</c>, <c>AnyUrl</c> and IP
/// addresses. Each rule matches the value inside the quotes. Where the full syntax is large, the grammar writes a
/// valid subset: dates never use the 29th of February (no leap-year rule), IPv6 is written uncompressed, e-mail
/// addresses and URLs use plain ASCII atoms and labels. Every value written passes a strict format check.
/// </summary>
public static class StringFormats
{
    /// <summary>The rules of each format (its own first, then what it needs); names are prefixed so they cannot clash.</summary>
    private static readonly Dictionary<string, string[]> Rules = new(StringComparer.Ordinal)
    {
        ["date"] =
        [
            // 31-day months, 30-day months, February up to the 28th: every date written exists.
            """fmt-date ::= [0-9]{4} "-" ( ("0" [13578] | "1" [02]) "-" fmt-day31 | ("0" [469] | "11") "-" fmt-day30 | "02" "-" fmt-day28 )""",
            """fmt-day31 ::= "0" [1-9] | [12] [0-9] | "3" [01]""",
            """fmt-day30 ::= "0" [1-9] | [12] [0-9] | "30" """,
            """fmt-day28 ::= "0" [1-9] | "1" [0-9] | "2" [0-8]""",
        ],
        ["time"] =
        [
            """fmt-time ::= fmt-hour ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})? fmt-offset""",
            """fmt-hour ::= [01] [0-9] | "2" [0-3]""",
            """fmt-offset ::= "Z" | [+-] fmt-hour ":" [0-5] [0-9]""",
        ],
        ["date-time"] = ["""fmt-date-time ::= fmt-date "T" fmt-time"""],
        ["duration"] =
        [
            """fmt-duration ::= "P" ( [0-9]{1,4} "W" | [0-9]{1,4} "D" ("T" fmt-hms)? | "T" fmt-hms )""",
            """fmt-hms ::= [0-9]{1,4} "H" ([0-9]{1,4} "M")? ([0-9]{1,4} "S")? | [0-9]{1,4} "M" ([0-9]{1,4} "S")? | [0-9]{1,4} "S" """,
        ],
        ["uuid"] = ["""fmt-uuid ::= [0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}"""],
        ["hostname"] =
        [
            """fmt-hostname ::= fmt-label ("." fmt-label){0,3}""",
            """fmt-label ::= [a-z0-9] ([a-z0-9-]{0,20} [a-z0-9])?""",
        ],
        ["email"] =
        [
            """fmt-email ::= fmt-atom ("." fmt-atom){0,3} "@" fmt-label ("." fmt-label){0,2} "." [a-z]{2,10}""",
            """fmt-atom ::= [a-zA-Z0-9_%+-]{1,16}""",
        ],
        ["ipv4"] =
        [
            """fmt-ipv4 ::= fmt-octet "." fmt-octet "." fmt-octet "." fmt-octet""",
            """fmt-octet ::= "25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9]""",
        ],
        ["ipv6"] = ["""fmt-ipv6 ::= [0-9a-f]{1,4} (":" [0-9a-f]{1,4}){7}"""],
        ["uri"] = ["""fmt-uri ::= ("https" | "http") "://" fmt-hostname ("/" [a-zA-Z0-9._~-]{1,20}){0,4}"""],
    };

    /// <summary>What each format needs besides its own rules.</summary>
    private static readonly Dictionary<string, string[]> Needs = new(StringComparer.Ordinal)
    {
        ["date-time"] = ["date", "time"],
        ["email"] = ["hostname"],
        ["uri"] = ["hostname"],
    };

    /// <summary>The formats this translation writes.</summary>
    public static IReadOnlyCollection<string> Supported => Rules.Keys;

    /// <summary>The rule name that matches a value of <paramref name="format"/> (without its quotes).</summary>
    public static string RuleName(string format) => "fmt-" + format;

    /// <summary>Every rule <paramref name="format"/> needs, its own first.</summary>
    public static IEnumerable<string> RulesOf(string format)
    {
        foreach (var rule in Rules[format])
        {
            yield return rule;
        }

        foreach (var need in Needs.GetValueOrDefault(format, []))
        {
            foreach (var rule in RulesOf(need))
            {
                yield return rule;
            }
        }
    }
}
