using System.Text.Json;
using LlmServing.Grammar;

namespace LlmServing.Tests;

/// <summary>JSON Schema to GBNF: what is refused and how text is quoted. Pure; the grammars run for real in <see cref="StructuredOutputTests"/>.</summary>
public sealed class JsonGrammarTests
{
    private static string Grammar(string schema) => JsonGrammar.ForSchema(JsonDocument.Parse(schema).RootElement);

    [TestCase("""{"type": "string", "pattern": "^a+$"}""", "pattern")]
    [TestCase("""{"type": "string", "format": "regex"}""", "format")]
    [TestCase("""{"type": "string", "format": "date", "maxLength": 10}""", "format")]
    [TestCase("""{"type": "integer", "format": "int64"}""", "format")]
    [TestCase("""{"enum": ["a"], "format": "email"}""", "format")]
    [TestCase("""{"allOf": [{"type": "string"}]}""", "allOf")]
    [TestCase("""{"type": "object", "properties": {"a": {"not": {"type": "null"}}}}""", "not")]
    [TestCase("""{"type": "array", "items": {"type": "string"}, "uniqueItems": true}""", "uniqueItems")]
    [TestCase("""{"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}""", "$ref")]
    [TestCase("""{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}""", "required")]
    [TestCase("""{"description": "no type"}""", "type")]
    [TestCase("""{"type": "array"}""", "items")]
    public void ShouldNameTheKeyword_WhenASchemaUsesWhatCannotBeGenerated(string schema, string keyword)
    {
        var error = Assert.Throws<UnsupportedSchemaException>(() => Grammar(schema));

        Assert.That(error!.Keyword, Is.EqualTo(keyword));
        Assert.That(error.Message, Does.Contain(keyword));
    }

    [Test]
    public void ShouldAcceptAnnotationsAndEveryStructuralKeyword_WhenTheSchemaIsSupported()
    {
        var grammar = Grammar("""
            {"title": "t", "description": "d", "type": "object", "additionalProperties": false,
             "properties": {"s": {"type": "string", "minLength": 1, "maxLength": 4}, "e": {"enum": ["a", 1, null]},
                            "c": {"const": "x"}, "n": {"type": ["number", "null"]}, "l": {"type": "array", "items": {"$ref": "#/$defs/b"}, "minItems": 1, "maxItems": 2},
                            "u": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, "o": {"oneOf": [{"type": "string"}, {"type": "null"}]}},
             "required": ["s"], "$defs": {"b": {"type": "boolean"}}}
            """);

        Assert.That(grammar, Does.Contain("root ::= \"{\" \"\\\"s\\\"\" \":\" "));
        Assert.That(grammar, Does.Contain("char{1,4}"));
        Assert.That(grammar, Does.Contain("(\"\\\"a\\\"\" | \"1\" | \"null\")"));
        Assert.That(grammar, Does.Contain("(\",\" \"\\\"e\\\"\" \":\" "), "an optional member follows the required one with its comma");
    }

    [Test]
    public void ShouldAllowARecursiveDefinition_WhenASchemaRefersToItself()
    {
        var grammar = Grammar("""
            {"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}}}}
            """);

        // def1 (the node) holds r3 (its children), whose items are r2 = def1 again: one definition, used recursively.
        Assert.That(grammar, Does.Contain("r2 ::= def1"));
        Assert.That(grammar, Does.Contain("def1 ::= \"{\" (\"\\\"children\\\"\" \":\" r3)? \"}\""));
        Assert.That(grammar, Does.Contain("root ::= def1"));
    }

    [TestCase("plain", "\"plain\"")]
    [TestCase("quote \" and \\", "\"quote \\\" and \\\\\"")]
    [TestCase("line\nbreak\ttab", "\"line\\nbreak\\ttab\"")]
    [TestCase("bell\u0007", "\"bell\\x07\"")]
    [TestCase("é", "\"é\"")]
    public void ShouldQuoteTextForGbnf(string text, string literal) =>
        Assert.That(JsonGrammar.Literal(text), Is.EqualTo(literal));

    [Test]
    public void ShouldWriteConstantsAsModelsWriteThem_WhenTheyHoldNonAsciiText() =>
        Assert.That(JsonGrammar.JsonText(JsonDocument.Parse("""{"a": ["é\u4e2d\ud83d\ude42", 1.5, null], "b\"": "\n"}""").RootElement),
            Is.EqualTo("{\"a\":[\"é中🙂\",1.5,null],\"b\\\"\":\"\\n\"}"));

    [TestCase(20_000)]
    [TestCase(3_000)]
    public void ShouldRefuseWithTheDepthLimit_WhenRefsChainThroughManyDefinitions(int definitions)
    {
        // 20,000 chained definitions overflowed the Producer's stack; 3,000 were accepted and failed at the worker.
        var defs = string.Join(",", Enumerable.Range(0, definitions).Select(i => $"\"d{i}\": {{\"$ref\": \"#/$defs/d{i + 1}\"}}"));
        var schema = $"{{\"$ref\": \"#/$defs/d0\", \"$defs\": {{{defs}, \"d{definitions}\": {{\"type\": \"string\"}}}}}}";

        var error = Assert.Throws<UnsupportedSchemaException>(() => Grammar(schema));

        Assert.That(error!.Keyword, Is.EqualTo("$ref"));
        Assert.That(error.Message, Does.Contain("more than 64 levels deep"));
    }

    [TestCase("minLength", 2500)]
    [TestCase("maxLength", 2001)]
    [TestCase("maxLength", 10_000)]
    public void ShouldRefuseAStringLengthAboveLlamaCppsRepetitionLimit(string keyword, int value)
    {
        var error = Assert.Throws<UnsupportedSchemaException>(() => Grammar($$"""{"type": "string", "{{keyword}}": {{value}}}"""));

        Assert.That(error!.Keyword, Is.EqualTo(keyword));
        Assert.That(error.Message, Does.Contain("at most 1999"));
    }

    [Test]
    public void ShouldTranslateInLinearSpace_WhenAnObjectHasManyOptionalProperties()
    {
        // A 32 KB schema of optional properties took 9 s and 942 MB to translate, since each alternative spelled out
        // every later member; its grammar now grows with the schema.
        var properties = string.Join(",", Enumerable.Range(0, 900).Select(i => $"\"property_{i:D4}\": {{\"type\": \"boolean\"}}"));
        var schema = $"{{\"type\": \"object\", \"properties\": {{{properties}}}}}";
        Assert.That(schema.Length, Is.GreaterThan(32_000));

        var before = GC.GetAllocatedBytesForCurrentThread();
        var grammar = Grammar(schema);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        TestContext.Out.WriteLine($"schema {schema.Length} chars -> grammar {grammar.Length} chars, {allocated / 1e6:F1} MB allocated");

        Assert.That(grammar.Length, Is.LessThan(5 * schema.Length), "grammar size (quadratic, it was 150 times the schema)");
        Assert.That(allocated, Is.LessThan(64L << 20), "bytes allocated while translating");
    }

    [Test]
    public void ShouldPassTheWorkersLimits_WhenAnObjectHasHundredsOfOptionalProperties()
    {
        // The tail rules start with a group that may be empty, and llama.cpp walks such rules recursively: chunked,
        // the walk stays far below the checker's left-chain limit.
        var properties = string.Join(",", Enumerable.Range(0, 400).Select(i => $"\"p{i}\": {{\"type\": \"integer\"}}"));

        var grammar = Grammar($"{{\"type\": \"object\", \"properties\": {{{properties}}}}}");

        Assert.That(Gbnf.Check(grammar), Is.Null, $"{grammar.Length} characters");
    }

    [TestCase("""{"type": "object", "properties": 5}""", "properties")]
    [TestCase("""{"type": "object", "properties": {"a": {"type": "string"}}, "required": [1]}""", "required")]
    [TestCase("""{"type": "object", "properties": {"a": {"type": "string"}}, "required": "a"}""", "required")]
    [TestCase("""{"$ref": 7}""", "$ref")]
    [TestCase("""{"type": 3}""", "type")]
    [TestCase("""{"type": [true]}""", "type")]
    [TestCase("""{"type": []}""", "type")]
    public void ShouldNameTheKeyword_WhenAKeywordHasAValueOfTheWrongType(string schema, string keyword)
    {
        // These threw InvalidOperationException (a 500) instead of naming the keyword.
        var error = Assert.Throws<UnsupportedSchemaException>(() => Grammar(schema));

        Assert.That(error!.Keyword, Is.EqualTo(keyword));
    }

    [Test]
    public void ShouldWriteEachFormatsRulesOnce_WhenFormatsShareThem()
    {
        var grammar = Grammar("""
            {"type": "object", "properties": {"a": {"type": "string", "format": "date-time"}, "b": {"type": "string", "format": "date"},
             "c": {"type": ["string", "null"], "format": "email"}, "d": {"type": "string", "format": "uri"}}, "required": ["a", "b", "c", "d"]}
            """);

        Assert.That(grammar.Split('\n').Count(l => l.StartsWith("fmt-date ::=", StringComparison.Ordinal)), Is.EqualTo(1));
        Assert.That(grammar.Split('\n').Count(l => l.StartsWith("fmt-label ::=", StringComparison.Ordinal)), Is.EqualTo(1));
        Assert.That(Gbnf.Check(grammar), Is.Null);
    }
}
