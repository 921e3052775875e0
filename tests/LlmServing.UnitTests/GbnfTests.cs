using LlmServing.Grammar;

namespace LlmServing.Tests;

/// <summary>
/// The GBNF check that stands before llama.cpp's parser: what llama.cpp would refuse (a null sampler, which the chain
/// would dereference) is refused here with the place of the problem. Pure; grammars run for real in
/// <see cref="RealTextTests"/> and <see cref="StructuredOutputTests"/>.
/// </summary>
public sealed class GbnfTests
{
    [TestCase("root ::= \"yes\" | \"no\"")]
    [TestCase("root ::= answer\nanswer ::= [A-Za-z]+ (\" \" [a-z]+){0,5} \".\"")]
    [TestCase("# a comment\nroot ::= (\n  \"a\" |\n  \"b\" # inside a group\n)*\n\n")]
    [TestCase("root ::= [^\\n\"]{1,40} \"\\x41\\u00e9\\U0001F642\" [\\-\\]] .")]
    [TestCase("root ::= list\nlist ::= \"[\" (item (\",\" item)*)? \"]\"\nitem ::= [0-9]{1,3}")]
    [TestCase("root ::= \"é中\" x?\r\nx ::= \"\"")]
    [TestCase("root ::= \"a\" root | \"b\"", Description = "right recursion is fine")]
    public void ShouldAccept_WhenTheGrammarIsValid(string grammar) =>
        Assert.That(Gbnf.Check(grammar), Is.Null);

    [TestCase("", "no rules")]
    [TestCase("# only a comment\n", "no rules")]
    [TestCase("answer ::= \"x\"", "no 'root' rule")]
    [TestCase("root ::= missing", "'missing' is used but never defined")]
    [TestCase("root ::= \"a\"\nroot ::= \"b\"", "'root' is defined twice (line 2, column 1)")]
    [TestCase("root = \"a\"", "Expected '::=' (line 1, column 6)")]
    [TestCase("root ::= \"abc", "string literal is not closed")]
    [TestCase("root ::= [a-z", "character class is not closed")]
    [TestCase("root ::= (\"a\" | \"b\"", "group is not closed (line 1, column 10)")]
    [TestCase("root ::= \"a\" )", "Expected the end of the line, found ')'")]
    [TestCase("root ::= \"\\q\"", "Unknown escape '\\q'")]
    [TestCase("root ::= \"\\x4\"", "'\\x' needs 2 hex digits")]
    [TestCase("root ::= * \"a\"", "nothing before it to repeat")]
    [TestCase("root ::= \"a\"{3,1}", "maximum is below its minimum")]
    [TestCase("root ::= \"a\"{2001}", "minimum is above 2000")]
    [TestCase("root ::= \"a\"{99999999999}", "number is too large")]
    [TestCase("root ::= (\"a\"{0,100}){0,100}", "too many rules")]
    [TestCase("root ::= [z-a]", "range runs backwards")]
    [TestCase("root ::= <think> \"a\"", "Token references")]
    [TestCase("root ::= root \"a\" | \"b\"", "'root' is left-recursive")]
    [TestCase("root ::= x\nx ::= y \"a\"\ny ::= \"\" | x", "left-recursive")]
    [TestCase("root ::= (\"\" | \"a\")*", "'root' is left-recursive", Description = "a repetition of something that can be empty loops in llama.cpp")]
    [TestCase("root ::= \"a\"\n| \"b\"", "Expected a rule name (line 2, column 1)")]
    [TestCase("root ::= \"a\0\"", "NUL")]
    public void ShouldRefuseWithThePlace_WhenLlamaCppCouldNotParseIt(string grammar, string expected) =>
        Assert.That(Gbnf.Check(grammar), Does.Contain(expected));

    [Test]
    public void ShouldRefuse_WhenTheGrammarIsTooLong() =>
        Assert.That(Gbnf.Check("root ::= \"" + new string('a', Gbnf.MaxLength) + "\""), Does.Contain("longer than"));

    [Test]
    public void ShouldAcceptEveryGrammarJsonSchemaProduces()
    {
        var schema = System.Text.Json.JsonDocument.Parse("""
            {"type": "object", "properties": {"a": {"type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 4},
             "b": {"anyOf": [{"type": "string", "minLength": 2, "maxLength": 9}, {"type": "number"}, {"type": "null"}]}},
             "required": ["a"], "$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}}}}
            """).RootElement;

        Assert.That(Gbnf.Check(JsonGrammar.ForSchema(schema)), Is.Null);
        Assert.That(Gbnf.Check(JsonGrammar.ForAnyObject()), Is.Null);
    }

    [Test]
    public void ShouldRefuseWithTheNestingLimit_WhenGroupsNest150TimesDeeperThanAllowed()
    {
        // 15,000 nested groups (30 KB): a recursive parser without a limit overflowed the Producer's stack and killed it.
        var grammar = "root ::= " + new string('(', 15_000) + "\"a\"" + new string(')', 15_000);

        Assert.That(Gbnf.Check(grammar), Does.Contain($"nested more than {Gbnf.MaxNesting} deep"));
        Assert.That(Gbnf.Check("root ::= " + new string('(', Gbnf.MaxNesting) + "\"a\"" + new string(')', Gbnf.MaxNesting)), Is.Null, "at the limit it is fine");
    }

    [Test]
    public void ShouldRefuseWithTheChainLimit_WhenRulesStartWithTheNext3000Times()
    {
        var rules = Enumerable.Range(0, 3000).Select(i => $"r{i} ::= r{i + 1}").Prepend("root ::= r0").Append("r3000 ::= \"b\"");

        Assert.That(Gbnf.Check(string.Join("\n", rules)), Does.Contain($"More than {Gbnf.MaxLeftChain} rules each start with the next"));
    }

    [Test]
    public void ShouldAccept_WhenManyRulesReferToEachOtherOutsideTheirStart()
    {
        // A long chain that is not at the start of each rule is no recursion risk for llama.cpp: not refused.
        var rules = Enumerable.Range(0, 3000).Select(i => $"r{i} ::= \"a\" r{i + 1}?").Prepend("root ::= r0").Append("r3000 ::= \"b\"");

        Assert.That(Gbnf.Check(string.Join("\n", rules)), Is.Null);
    }

    /// <summary>
    /// <paramref name="outer"/> alternatives, each a rule that opens the same <paramref name="inner"/> alternatives:
    /// llama.cpp keeps outer × inner stacks and checks every candidate token against each.
    /// </summary>
    private static string TwoLevels(int outer, int inner) =>
        "root ::= (" + string.Join(" | ", Enumerable.Range(0, outer).Select(i => $"a{i}")) + ")+\n"
        + string.Concat(Enumerable.Range(0, outer).Select(i => $"a{i} ::= b\n"))
        + "b ::= " + string.Join(" | ", Enumerable.Range(0, inner).Select(j => $"\"w{j}\"")) + "\n";

    [Test]
    public void ShouldRefuseAsTooAmbiguous_WhenAValidGrammarOpens25600StacksAtOnce()
    {
        // The audit's 4.9 KB grammar: a job under it ran 4.6 s against a 1 s limit and stalled an unrelated job on
        // the same worker for 4.1 s.
        var grammar = TwoLevels(160, 160);
        Assert.That(grammar.Length, Is.LessThan(6_000));

        Assert.That(Gbnf.Check(grammar), Does.Contain("too ambiguous").And.Contain("25,600 alternatives at once"));
    }

    [Test]
    public void ShouldRefuseAsTooAmbiguous_WhenNestedRepetitionsMultiplyTheStacks()
    {
        // Four levels of 10 alternatives in under 1 KB: 10,000 stacks (a variant took 111 s for one token offline).
        var grammar = "root ::= l4\n" + string.Concat(Enumerable.Range(1, 3).Select(level =>
            $"l{level + 1} ::= " + string.Join(" | ", Enumerable.Range(0, 10).Select(_ => $"l{level}")) + "\n"))
            + "l1 ::= " + string.Join(" | ", Enumerable.Range(0, 10).Select(j => $"\"{j}\"")) + "\n";

        Assert.That(Gbnf.Check(grammar), Does.Contain("too ambiguous"));
    }

    [Test]
    public void ShouldAcceptUpToTheLimit_WhenAlternativesNestWithinIt()
    {
        // After a word, the repetition may also end: one stack more than outer × inner.
        Assert.That(Gbnf.Check(TwoLevels(31, 33)), Is.Null, "31 × 33 + 1 = 1024 stacks");
        Assert.That(Gbnf.Check(TwoLevels(32, 32)), Does.Contain("1,025 alternatives"));
    }

    [Test]
    public void ShouldAcceptTheWidestGrammarsJsonSchemasProduce()
    {
        var values = string.Join(",", Enumerable.Range(0, 500).Select(i => $"\"v{i}\""));
        var schema = System.Text.Json.JsonDocument.Parse($$$$"""
            {"type": "object", "properties": {"e": {"enum": [{{{{values}}}}]}, "s": {"type": "string", "maxLength": 1999},
             "n": {"type": ["integer", "number", "null"]}}}
            """).RootElement;

        Assert.That(Gbnf.Check(JsonGrammar.ForSchema(schema)), Is.Null);
    }
}
