namespace LlmServing.Grammar;

/// <summary>
/// Checks a llama.cpp grammar (GBNF) before it reaches the native parser. llama.cpp answers an invalid grammar with a
/// null sampler, which the sampling chain would then dereference, so a client's grammar is parsed here first, by the
/// same rules and with the same expansion of repetitions, and refused with a message naming the line and column.
/// Stricter than llama.cpp where that is simpler: token references (<c>&lt;...&gt;</c>, <c>!&lt;...&gt;</c>) are
/// refused, a rule may be defined once, and <c>{m,n}</c> needs <c>m &lt;= n</c> (llama.cpp would loop on it).
/// Pure: used by the Producer to answer 422 and by the worker to fail such a job instead of crashing.
/// </summary>
public static class Gbnf
{
    /// <summary>Longest grammar text accepted, in characters.</summary>
    public const int MaxLength = 64 * 1024;

    private const int MaxRepetition = 2000; // llama.cpp's MAX_REPETITION_THRESHOLD

    /// <summary>Deepest nesting of parenthesised groups accepted (llama.cpp's parser recurses once per level).</summary>
    public const int MaxNesting = 100;

    /// <summary>
    /// Longest chain of rules that each start with the next (<c>a ::= b ...</c>, <c>b ::= c ...</c>): llama.cpp walks
    /// such chains recursively when it checks and advances a grammar, so a longer one could exhaust a worker's stack.
    /// </summary>
    public const int MaxLeftChain = 1000;

    /// <summary>
    /// Most parse stacks the grammar may have open at one point (llama.cpp's <c>advance_stack</c> expands every
    /// alternative that could match next into a stack of its own, and checks every candidate token against every
    /// stack): 160 alternatives of 160 alternatives open 25,600 stacks, and one token then took seconds, stalling every
    /// job on the worker. JSON schemas stay well below (an enum of 500 values opens 500).
    /// </summary>
    public const int MaxOpenStacks = 1024;

    /// <summary>Null when the grammar is valid with start rule <c>root</c>; otherwise why not.</summary>
    public static string? Check(string grammar)
    {
        if (grammar.Length > MaxLength)
        {
            return $"The grammar is longer than {MaxLength} characters.";
        }

        if (grammar.Contains('\0'))
        {
            return "The grammar holds a NUL character.";
        }

        try
        {
            var parser = new Parser(grammar);
            parser.Parse();
            return null;
        }
        catch (GrammarException e)
        {
            return e.Message;
        }
    }

    private sealed class GrammarException(string message) : Exception(message);

    private enum Kind { Char, Ref, Alt, End }

    private readonly record struct Element(Kind Kind, int Value = 0);

    private sealed class Parser(string src)
    {
        private readonly Dictionary<string, int> _symbols = new(StringComparer.Ordinal);
        private readonly Dictionary<int, List<Element>> _rules = [];
        private readonly HashSet<string> _defined = new(StringComparer.Ordinal);
        private int _pos;
        private int _depth;
        private readonly Dictionary<int, (double Open, bool MayBeEmpty)> _starts = [];

        public void Parse()
        {
            SkipSpace(newlines: true);
            if (_pos >= src.Length)
            {
                throw Error("The grammar has no rules.");
            }

            while (_pos < src.Length)
            {
                ParseRule();
            }

            foreach (var (name, id) in _symbols)
            {
                if (!_rules.ContainsKey(id))
                {
                    throw new GrammarException($"The rule '{name}' is used but never defined.");
                }
            }

            if (!_symbols.ContainsKey("root"))
            {
                throw new GrammarException("The grammar has no 'root' rule.");
            }

            DetectLeftRecursion();
            LimitAmbiguity();
        }

        /// <summary>
        /// Counts the stacks llama.cpp opens at each point where it can stand (a rule's start, after each terminal)
        /// and refuses the grammar when one point opens more than <see cref="MaxOpenStacks"/>. A rule reference opens
        /// the stacks of each of its alternatives; an alternative that can be empty also opens what follows the
        /// reference. Where a rule may end, its caller's continuation counts one (a lower bound, so the limit is
        /// never stricter than llama.cpp's real count). Runs after the left-recursion check, so the walk through rule
        /// starts cannot loop.
        /// </summary>
        private void LimitAmbiguity()
        {
            foreach (var (id, rule) in _rules)
            {
                var (atStart, endsAtStart) = Start(id);
                var worst = atStart + (endsAtStart ? 1 : 0);
                for (var i = 0; i < rule.Count && worst <= MaxOpenStacks; i++)
                {
                    if (rule[i].Kind == Kind.Char)
                    {
                        var (open, ends) = From(rule, i + 1);
                        worst = Math.Max(worst, open + (ends ? 1 : 0));
                    }
                }

                if (worst > MaxOpenStacks)
                {
                    var shown = worst >= 1e15 ? "an unbounded number of" : worst.ToString("N0", System.Globalization.CultureInfo.InvariantCulture);
                    throw new GrammarException(
                        $"The grammar is too ambiguous: in rule '{BaseName(id)}' llama.cpp would follow {shown} alternatives at once " +
                        $"(at most {MaxOpenStacks}); every token is checked against each of them. Merge alternatives that start alike.");
                }
            }
        }

        /// <summary>The stacks a rule opens at its start, and whether it can match nothing (memoised; acyclic after the left-recursion check).</summary>
        private (double Open, bool MayBeEmpty) Start(int id)
        {
            if (_starts.TryGetValue(id, out var known))
            {
                return known;
            }

            var rule = _rules[id];
            double open = 0;
            var empty = false;
            var beginning = true;
            for (var i = 0; i < rule.Count; i++)
            {
                if (beginning)
                {
                    var (o, e) = From(rule, i);
                    open = Math.Min(open + o, 1e15);
                    empty |= e;
                    beginning = false;
                }

                if (rule[i].Kind == Kind.Alt)
                {
                    beginning = true;
                }
            }

            return _starts[id] = (open, empty);
        }

        /// <summary>
        /// The stacks opened from position <paramref name="i"/> of a rule up to the first terminal, and whether its end
        /// is reached (every way there leaves the same stack, which llama.cpp keeps once).
        /// </summary>
        private (double Open, bool ReachesEnd) From(List<Element> rule, int i)
        {
            double open = 0;
            for (; i < rule.Count; i++)
            {
                var e = rule[i];
                switch (e.Kind)
                {
                    case Kind.Char:
                        return (Math.Min(open + 1, 1e15), false);
                    case Kind.Ref:
                        var (o, empty) = Start(e.Value);
                        open = Math.Min(open + o, 1e15);
                        if (!empty)
                        {
                            return (open, false);
                        }

                        break;
                    default:
                        return (open, true);
                }
            }

            return (open, true);
        }

        private void ParseRule()
        {
            var start = _pos;
            var name = ParseName();
            if (!_defined.Add(name))
            {
                throw Error($"The rule '{name}' is defined twice.", start);
            }

            var id = SymbolId(name);
            SkipSpace(newlines: false);
            if (string.CompareOrdinal(src, _pos, "::=", 0, 3) != 0)
            {
                throw Error("Expected '::='.");
            }

            _pos += 3;
            SkipSpace(newlines: true);
            ParseAlternates(name, id, nested: false);
            if (_pos < src.Length)
            {
                if (src[_pos] == '\r')
                {
                    _pos += _pos + 1 < src.Length && src[_pos + 1] == '\n' ? 2 : 1;
                }
                else if (src[_pos] == '\n')
                {
                    _pos++;
                }
                else
                {
                    throw Error($"Expected the end of the line, found '{src[_pos]}'.");
                }
            }

            SkipSpace(newlines: true);
        }

        private void ParseAlternates(string ruleName, int id, bool nested)
        {
            var rule = new List<Element>();
            ParseSequence(ruleName, rule, nested);
            while (Peek() == '|')
            {
                rule.Add(new Element(Kind.Alt));
                _pos++;
                SkipSpace(newlines: true);
                ParseSequence(ruleName, rule, nested);
            }

            rule.Add(new Element(Kind.End));
            _rules[id] = rule;
        }

        private void ParseSequence(string ruleName, List<Element> rule, bool nested)
        {
            var lastStart = rule.Count;
            long previousRules = 1;
            while (_pos < src.Length)
            {
                var c = src[_pos];
                if (c == '"')
                {
                    _pos++;
                    lastStart = rule.Count;
                    previousRules = 1;
                    while (Peek() != '"')
                    {
                        if (_pos >= src.Length)
                        {
                            throw Error("A string literal is not closed.");
                        }

                        ParseChar();
                        rule.Add(new Element(Kind.Char));
                    }

                    _pos++;
                    SkipSpace(nested);
                }
                else if (c == '[')
                {
                    _pos++;
                    if (Peek() == '^')
                    {
                        _pos++;
                    }

                    lastStart = rule.Count;
                    previousRules = 1;
                    while (Peek() != ']')
                    {
                        if (_pos >= src.Length)
                        {
                            throw Error("A character class is not closed.");
                        }

                        var low = ParseChar();
                        if (Peek() == '-' && _pos + 1 < src.Length && src[_pos + 1] != ']')
                        {
                            _pos++;
                            var high = ParseChar();
                            if (high < low)
                            {
                                throw Error("A character range runs backwards.");
                            }
                        }
                    }

                    rule.Add(new Element(Kind.Char)); // a class is one terminal
                    _pos++;
                    SkipSpace(nested);
                }
                else if (c is '<' or '!')
                {
                    throw Error("Token references ('<...>') are not supported; write the text instead.");
                }
                else if (IsWordChar(c))
                {
                    var id = SymbolId(ParseName());
                    SkipSpace(nested);
                    lastStart = rule.Count;
                    previousRules = 1;
                    rule.Add(new Element(Kind.Ref, id));
                }
                else if (c == '(')
                {
                    var open = _pos;
                    _pos++;
                    SkipSpace(newlines: true);
                    var before = _symbols.Count;
                    var sub = GenerateId(ruleName);
                    if (++_depth > MaxNesting)
                    {
                        throw Error($"Groups are nested more than {MaxNesting} deep.", open);
                    }

                    ParseAlternates(ruleName, sub, nested: true);
                    _depth--;
                    previousRules = Math.Max(1, _symbols.Count - before);
                    lastStart = rule.Count;
                    rule.Add(new Element(Kind.Ref, sub));
                    if (Peek() != ')')
                    {
                        throw Error("A group is not closed.", open);
                    }

                    _pos++;
                    SkipSpace(nested);
                }
                else if (c == '.')
                {
                    lastStart = rule.Count;
                    previousRules = 1;
                    rule.Add(new Element(Kind.Char));
                    _pos++;
                    SkipSpace(nested);
                }
                else if (c is '*' or '+' or '?')
                {
                    var at = _pos;
                    _pos++;
                    SkipSpace(nested);
                    Repeat(ruleName, rule, lastStart, ref previousRules, c == '+' ? 1 : 0, c == '?' ? 1 : long.MaxValue, at);
                }
                else if (c == '{')
                {
                    var at = _pos;
                    _pos++;
                    SkipSpace(nested);
                    var min = ParseInt();
                    SkipSpace(nested);
                    long max;
                    if (Peek() == '}')
                    {
                        max = min;
                    }
                    else if (Peek() == ',')
                    {
                        _pos++;
                        SkipSpace(nested);
                        max = char.IsAsciiDigit(Peek()) ? ParseInt() : long.MaxValue;
                        SkipSpace(nested);
                        if (Peek() != '}')
                        {
                            throw Error("Expected '}'.");
                        }
                    }
                    else
                    {
                        throw Error("Expected ',' or '}'.");
                    }

                    _pos++;
                    SkipSpace(nested);
                    if (min > MaxRepetition)
                    {
                        throw Error($"A repetition's minimum is above {MaxRepetition}.", at);
                    }

                    if (max != long.MaxValue && max < min)
                    {
                        throw Error("A repetition's maximum is below its minimum.", at);
                    }

                    if (max != long.MaxValue && max > MaxRepetition)
                    {
                        max = long.MaxValue; // as llama.cpp: read as unbounded
                    }

                    Repeat(ruleName, rule, lastStart, ref previousRules, min, max, at);
                }
                else
                {
                    break;
                }
            }
        }

        /// <summary>Expands a repetition into rules exactly as llama.cpp does, so that left recursion is found the same way.</summary>
        private void Repeat(string ruleName, List<Element> rule, int lastStart, ref long previousRules, long min, long max, int at)
        {
            if (lastStart == rule.Count)
            {
                throw Error("A repetition has nothing before it to repeat.", at);
            }

            var unbounded = max == long.MaxValue;
            var previous = rule.GetRange(lastStart, rule.Count - lastStart);
            var total = !unbounded && max > 0 ? max : min > 0 ? min : 1;
            if (previousRules * total >= MaxRepetition)
            {
                throw Error($"A repetition expands to too many rules (llama.cpp's limit is {MaxRepetition}).", at);
            }

            if (min == 0)
            {
                rule.RemoveRange(lastStart, rule.Count - lastStart);
            }
            else
            {
                for (var i = 1; i < min; i++)
                {
                    rule.AddRange(previous);
                }
            }

            var optional = unbounded ? 1 : max - min;
            var lastId = 0;
            for (var i = 0; i < optional; i++)
            {
                var id = GenerateId(ruleName);
                var recursive = new List<Element>(previous);
                if (i > 0 || unbounded)
                {
                    recursive.Add(new Element(Kind.Ref, unbounded ? id : lastId));
                }

                recursive.Add(new Element(Kind.Alt));
                recursive.Add(new Element(Kind.End));
                _rules[id] = recursive;
                lastId = id;
            }

            if (optional > 0)
            {
                rule.Add(new Element(Kind.Ref, lastId));
            }

            previousRules *= total;
        }

        /// <summary>
        /// llama.cpp refuses a rule that can reach itself before consuming a character (it would loop). A rule counts
        /// as possibly empty when one of its alternatives is empty, as llama.cpp judges it.
        /// </summary>
        private void DetectLeftRecursion()
        {
            var inProgress = new HashSet<int>();
            var done = new HashSet<int>();
            var mayBeEmpty = new HashSet<int>();
            var depth = 0;
            foreach (var id in _rules.Keys.Order())
            {
                depth = 0;
                if (Visit(id))
                {
                    throw new GrammarException(
                        $"The rule '{BaseName(id)}' is left-recursive: it can reach itself before matching any character.");
                }
            }

            bool Visit(int id)
            {
                if (inProgress.Contains(id))
                {
                    return true;
                }

                if (done.Contains(id))
                {
                    return false;
                }

                if (++depth > MaxLeftChain)
                {
                    throw new GrammarException(
                        $"More than {MaxLeftChain} rules each start with the next (from '{BaseName(id)}'); llama.cpp walks such chains recursively.");
                }

                inProgress.Add(id);
                var rule = _rules[id];
                var atStart = true;
                foreach (var e in rule)
                {
                    if (e.Kind is Kind.Alt or Kind.End)
                    {
                        if (atStart)
                        {
                            mayBeEmpty.Add(id);
                            break;
                        }

                        atStart = true;
                    }
                    else
                    {
                        atStart = false;
                    }
                }

                var leftmost = true;
                foreach (var e in rule)
                {
                    if (e.Kind == Kind.Ref && leftmost)
                    {
                        var found = Visit(e.Value);
                        depth--;
                        if (found)
                        {
                            return true;
                        }

                        leftmost = mayBeEmpty.Contains(e.Value);
                    }
                    else
                    {
                        leftmost = e.Kind is Kind.Alt or Kind.End;
                    }
                }

                inProgress.Remove(id);
                done.Add(id);
                return false;
            }
        }

        /// <summary>The rule's name as written (a generated rule: the rule it came from); looked up only to explain a refusal.</summary>
        private string BaseName(int id)
        {
            var name = _symbols.First(kv => kv.Value == id).Key;
            var generated = name.IndexOf('\u0001');
            return generated < 0 ? name : name[..generated];
        }

        private int SymbolId(string name)
        {
            if (!_symbols.TryGetValue(name, out var id))
            {
                id = _symbols.Count;
                _symbols[name] = id;
            }

            return id;
        }

        /// <summary>A rule made for a group or repetition; its name cannot clash with a written one.</summary>
        private int GenerateId(string baseName)
        {
            var id = _symbols.Count;
            _symbols[$"{baseName}\u0001{id}"] = id;
            _rules[id] = [new Element(Kind.End)]; // defined by its parse; a placeholder keeps the undefined check right
            return id;
        }

        private string ParseName()
        {
            var start = _pos;
            while (_pos < src.Length && IsWordChar(src[_pos]))
            {
                _pos++;
            }

            return _pos > start ? src[start.._pos] : throw Error("Expected a rule name.");
        }

        private long ParseInt()
        {
            var start = _pos;
            while (_pos < src.Length && char.IsAsciiDigit(src[_pos]))
            {
                _pos++;
            }

            if (_pos == start)
            {
                throw Error("Expected a number.");
            }

            return _pos - start <= 9 ? long.Parse(src.AsSpan(start, _pos - start)) : throw Error("A number is too large.", start);
        }

        /// <summary>One character of a literal or class, escapes included; returns its code point.</summary>
        private int ParseChar()
        {
            if (src[_pos] != '\\')
            {
                if (char.IsHighSurrogate(src[_pos]) && _pos + 1 < src.Length && char.IsLowSurrogate(src[_pos + 1]))
                {
                    var cp = char.ConvertToUtf32(src[_pos], src[_pos + 1]);
                    _pos += 2;
                    return cp;
                }

                return src[_pos++];
            }

            if (_pos + 1 >= src.Length)
            {
                throw Error("The grammar ends inside an escape.");
            }

            var kind = src[_pos + 1];
            var hex = kind switch { 'x' => 2, 'u' => 4, 'U' => 8, _ => 0 };
            if (hex > 0)
            {
                _pos += 2;
                var value = 0L;
                for (var i = 0; i < hex; i++, _pos++)
                {
                    if (_pos >= src.Length || !char.IsAsciiHexDigit(src[_pos]))
                    {
                        throw Error($"'\\{kind}' needs {hex} hex digits.");
                    }

                    value = value * 16 + Convert.ToInt32(src[_pos].ToString(), 16);
                }

                return (int)Math.Min(value, int.MaxValue);
            }

            if (kind is 't' or 'r' or 'n' or '\\' or '"' or '[' or ']' or '-')
            {
                _pos += 2;
                return kind switch { 't' => '\t', 'r' => '\r', 'n' => '\n', _ => kind };
            }

            throw Error($"Unknown escape '\\{kind}'.");
        }

        private void SkipSpace(bool newlines)
        {
            while (_pos < src.Length)
            {
                var c = src[_pos];
                if (c == '#')
                {
                    while (_pos < src.Length && src[_pos] is not ('\r' or '\n'))
                    {
                        _pos++;
                    }
                }
                else if (c is ' ' or '\t' || (newlines && c is '\r' or '\n'))
                {
                    _pos++;
                }
                else
                {
                    break;
                }
            }
        }

        private char Peek() => _pos < src.Length ? src[_pos] : '\0';

        private static bool IsWordChar(char c) => char.IsAsciiLetterOrDigit(c) || c == '-';

        private GrammarException Error(string message, int? at = null)
        {
            var pos = Math.Min(at ?? _pos, src.Length);
            var line = 1;
            var lineStart = 0;
            for (var i = 0; i < pos; i++)
            {
                if (src[i] == '\n')
                {
                    line++;
                    lineStart = i + 1;
                }
            }

            return new GrammarException($"{message.TrimEnd('.')} (line {line}, column {pos - lineStart + 1}).");
        }
    }
}
