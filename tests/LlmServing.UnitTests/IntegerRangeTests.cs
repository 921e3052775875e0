using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using LlmServing.Grammar;

namespace LlmServing.Tests;

/// <summary>
/// Integer bounds as exact digit ranges: the expression is turned into a regular expression here (it uses only
/// literals, classes, groups, alternation and counted repetition) and checked number by number against the bounds.
/// </summary>
public sealed class IntegerRangeTests
{
    private static Regex AsRegex(string gbnf)
    {
        var pattern = Regex.Replace(gbnf, "\"([^\"]*)\"", m => Regex.Escape(m.Groups[1].Value)).Replace(" ", "");
        return new Regex("^(?:" + pattern + ")$", RegexOptions.CultureInvariant);
    }

    [TestCase(0L, 120L)]
    [TestCase(7L, 7L)]
    [TestCase(13L, 4567L)]
    [TestCase(-120L, -3L)]
    [TestCase(-45L, 678L)]
    [TestCase(100L, 999L)]
    [TestCase(99L, 1000L)]
    [TestCase(1L, 1L)]
    public void ShouldMatchExactlyTheIntegersInTheRange_WhenBothBoundsAreGiven(long min, long max)
    {
        var regex = AsRegex(IntegerRange.Expression(min, max));

        for (var n = min - 300; n <= max + 300; n++)
        {
            Assert.That(regex.IsMatch(n.ToString(CultureInfo.InvariantCulture)), Is.EqualTo(n >= min && n <= max), $"{n}");
        }

        Assert.That(regex.IsMatch("-0"), Is.False, "JSON writes zero as 0");
        Assert.That(regex.IsMatch("007"), Is.False, "no leading zeros");
    }

    [TestCase(18L, null)]
    [TestCase(-5L, null)]
    [TestCase(null, 42L)]
    [TestCase(null, -42L)]
    public void ShouldMatchOneSideOfTheBound_WhenTheOtherIsOpen(long? min, long? max)
    {
        var regex = AsRegex(IntegerRange.Expression(min, max));

        foreach (var n in Enumerable.Range(-2000, 4001).Select(i => (long)i).Concat([123_456_789_012L, -987_654_321L]))
        {
            Assert.That(regex.IsMatch(n.ToString(CultureInfo.InvariantCulture)), Is.EqualTo((min is null || n >= min) && (max is null || n <= max)), $"{n}");
        }
    }

    [TestCase("""{"type": "integer", "minimum": 0, "maximum": 120}""", 0L, 120L)]
    [TestCase("""{"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}""", 1L, 9L)]
    [TestCase("""{"type": "integer", "minimum": 0.5, "maximum": 3.5}""", 1L, 3L)]
    public void ShouldTranslateTheBoundsPydanticWrites(string schema, long min, long max)
    {
        var grammar = JsonGrammar.ForSchema(JsonDocument.Parse(schema).RootElement);
        var root = grammar.Split('\n')[0];

        Assert.That(root, Is.EqualTo("root ::= (" + IntegerRange.Expression(min, max) + ")"));
        Assert.That(Gbnf.Check(grammar), Is.Null);
    }

    [TestCase("""{"type": "number", "maximum": 1}""", "maximum")]
    [TestCase("""{"type": "number", "exclusiveMaximum": 1}""", "exclusiveMaximum")]
    [TestCase("""{"type": "integer", "minimum": 5, "maximum": 4}""", "maximum")]
    [TestCase("""{"type": "integer", "minimum": "1"}""", "minimum")]
    [TestCase("""{"type": "integer", "minimum": 1e20}""", "minimum")]
    public void ShouldNameTheBound_WhenItCannotBeHonouredExactly(string schema, string keyword)
    {
        var error = Assert.Throws<UnsupportedSchemaException>(() => JsonGrammar.ForSchema(JsonDocument.Parse(schema).RootElement));

        Assert.That(error!.Keyword, Is.EqualTo(keyword));
    }
}
