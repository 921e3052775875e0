using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.Grammar;

namespace LlmServing.Producer.Application;

/// <summary>Body of <c>POST /v1/jobs</c>: OpenAI-style fields; unknown fields (e.g. <c>model</c>) are ignored.</summary>
public sealed class CreateJobRequest
{
    /// <summary>Completion prompt. Give either this or <see cref="Messages"/>.</summary>
    public string? Prompt { get; set; }

    /// <summary>Chat messages (<c>system</c>, <c>user</c>, <c>assistant</c>). Give either this or <see cref="Prompt"/>.</summary>
    public List<ChatMessageDto>? Messages { get; set; }

    /// <summary>New tokens to generate at most (1..context size).</summary>
    public int? MaxTokens { get; set; }

    /// <summary>0..2; 0 is greedy. Default 1.</summary>
    public float? Temperature { get; set; }

    /// <summary>(0, 1]. Default 1.</summary>
    public float? TopP { get; set; }

    /// <summary>Sampler seed for repeatable output.</summary>
    public uint? Seed { get; set; }

    /// <summary>A stop string or up to 4 of them.</summary>
    public JsonElement? Stop { get; set; }

    /// <summary>Never end at end-of-sequence (as vLLM's <c>ignore_eos</c>): generates exactly <c>max_tokens</c>.</summary>
    public bool? IgnoreEos { get; set; }

    /// <summary>A job not started within this many seconds is not run (status <c>expired</c>).</summary>
    public int? QueueTimeoutSeconds { get; set; }

    /// <summary>Generation time limit; the text so far is kept with finish reason <c>time_limit</c>.</summary>
    public int? MaxGenerationSeconds { get; set; }

    /// <summary>OpenAI's newer name for <see cref="MaxTokens"/>.</summary>
    public int? MaxCompletionTokens { get; set; }

    /// <summary>Sample among the k most likely tokens only (0..1000; 0 = off).</summary>
    public int? TopK { get; set; }

    /// <summary>Minimum probability relative to the most likely token (0..1; 0 = off).</summary>
    public float? MinP { get; set; }

    /// <summary>-2..2 (OpenAI).</summary>
    public float? FrequencyPenalty { get; set; }

    /// <summary>-2..2 (OpenAI).</summary>
    public float? PresencePenalty { get; set; }

    /// <summary>llama.cpp's repetition penalty, (0, 2]; 1 = off.</summary>
    public float? RepetitionPenalty { get; set; }

    /// <summary>Token id (as a string key, as OpenAI writes it) to a bias of -100..100; at most 300 entries.</summary>
    public Dictionary<string, float>? LogitBias { get; set; }

    /// <summary>Return each generated token's log-probability (<c>true</c>/<c>false</c>).</summary>
    public JsonElement? Logprobs { get; set; }

    /// <summary>With <c>logprobs: true</c>, the most likely alternatives at each position (0..20).</summary>
    public int? TopLogprobs { get; set; }

    /// <summary>Choices to generate from one prompt, 1..8 (the prompt is prefilled once).</summary>
    public int? N { get; set; }

    /// <summary>
    /// <c>{"type": "text"}</c> (the default), <c>{"type": "json_object"}</c>, or <c>{"type": "json_schema",
    /// "json_schema": {"name", "schema", "strict"}}</c>: the output follows the schema (see the README for the keywords).
    /// </summary>
    public JsonElement? ResponseFormat { get; set; }

    /// <summary>
    /// An extension (as llama.cpp's server): a llama.cpp grammar (GBNF) with start rule <c>root</c> that the output
    /// follows. Checked here (422 with the line and column of the problem); not together with a JSON response_format.
    /// </summary>
    public string? Grammar { get; set; }

    /// <summary>
    /// Where to deliver this job's final state as a signed webhook (Standard Webhooks), instead of the tenant's default.
    /// Jobs only: a batch takes its own <c>webhook_url</c>, not its lines.
    /// </summary>
    public string? WebhookUrl { get; set; }

    /// <summary>Every other field: accepted when harmless, refused (422 naming it) when it cannot be honoured.</summary>
    [System.Text.Json.Serialization.JsonExtensionData]
    public Dictionary<string, JsonElement>? OtherFields { get; set; }
}

public sealed class ChatMessageDto
{
    public string? Role { get; set; }

    public JsonElement? Content { get; set; }
}

/// <summary>A job as the API shows it.</summary>
public sealed record JobResponse
{
    public required Guid Id { get; init; }
    public string Object => "job";
    public required string Status { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset? QueuedAt { get; init; }
    public DateTimeOffset? StartedAt { get; init; }
    public DateTimeOffset? FinishedAt { get; init; }
    public string? OutputText { get; init; }
    public string? FinishReason { get; init; }
    public UsageResponse? Usage { get; init; }
    public JobTimings? Timings { get; init; }
    public string? Error { get; init; }
    public int Attempts { get; init; }
    public DateTimeOffset? Deadline { get; init; }
    public DateTimeOffset? CancelRequestedAt { get; init; }

    /// <summary>OpenAI's <c>logprobs</c> object (<c>content[]</c> of token, logprob, bytes, top_logprobs), when asked for.</summary>
    public JsonElement? Logprobs { get; init; }

    /// <summary>With <c>n</c> above 1: every choice (index, text, finish_reason, completion_tokens, logprobs); <c>output_text</c> is the first.</summary>
    public JsonElement? Choices { get; init; }
}

public sealed record UsageResponse(int PromptTokens, int CompletionTokens, int TotalTokens)
{
    /// <summary>As OpenAI: how many prompt tokens came from the prefix cache.</summary>
    public PromptTokensDetails? PromptTokensDetails { get; init; }
}

public sealed record PromptTokensDetails(int CachedTokens);

/// <summary>Milliseconds spent waiting for a worker and running on it.</summary>
public sealed record JobTimings(double? QueueMs, double? RunMs, double? TotalMs);

internal static class JobRequestValidator
{
    private static readonly HashSet<string> Roles = ["system", "developer", "user", "assistant"];

    /// <summary>OpenAI fields with nothing to honour here: accepted and ignored.</summary>
    public static readonly string[] HarmlessFields = ["model", "user", "metadata", "store", "service_tier"];

    /// <summary>The grammar for a <c>response_format</c>; null for text. Throws <see cref="UnsupportedSchemaException"/>.</summary>
    private static string? ResponseGrammar(JsonElement? format)
    {
        if (format is not { ValueKind: not JsonValueKind.Null } f)
        {
            return null;
        }

        var type = f.ValueKind == JsonValueKind.Object && f.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        switch (type)
        {
            case "text":
                return null;
            case "json_object":
                return JsonGrammar.ForAnyObject();
            case "json_schema":
                if (!f.TryGetProperty("json_schema", out var spec) || spec.ValueKind != JsonValueKind.Object
                    || !spec.TryGetProperty("schema", out var schema) || schema.ValueKind != JsonValueKind.Object)
                {
                    throw new UnsupportedSchemaException("json_schema", "'response_format.json_schema' needs 'name' and a 'schema' object.");
                }

                if (!spec.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String
                    || !System.Text.RegularExpressions.Regex.IsMatch(name.GetString()!, "^[a-zA-Z0-9_-]{1,64}$"))
                {
                    throw new UnsupportedSchemaException("name", "'response_format.json_schema.name' is 1 to 64 letters, digits, '_' or '-'.");
                }

                var grammar = JsonGrammar.ForSchema(schema);
                if (grammar.Length > Gbnf.MaxLength)
                {
                    throw new UnsupportedSchemaException("schema", "The schema is too large: its grammar exceeds 64 KiB.");
                }

                // Every limit the worker's check enforces (repetitions, rule chains) is enforced here, at submission.
                return Gbnf.Check(grammar) is { } problem
                    ? throw new UnsupportedSchemaException("schema", $"The schema's grammar cannot run: {problem}")
                    : grammar;
            default:
                throw new UnsupportedSchemaException("type", "'response_format.type' is \"text\", \"json_object\" or \"json_schema\".");
        }
    }

    /// <summary>
    /// Fields other than the request's own: harmless ones pass; the default value of a feature this system lacks
    /// passes (<c>n: 1</c>, <c>stream: false</c>, <c>logprobs: false</c>, <c>response_format: {"type": "text"}</c>);
    /// everything else is named and refused, never silently dropped.
    /// </summary>
    private static IEnumerable<(string Field, string Message)> UnsupportedFields(CreateJobRequest r)
    {
        foreach (var (name, value) in r.OtherFields ?? [])
        {
            var field = name.Replace('\0', '\uFFFD');
            var harmless = HarmlessFields.Contains(name)
                           || value.ValueKind == JsonValueKind.Null
                           || (name is "stream" or "echo" && value.ValueKind == JsonValueKind.False);
            if (harmless)
            {
                continue;
            }

            yield return (field, name switch
            {
                "stream" => "'stream' is not supported here: jobs and batch lines return their whole result.",
                "tools" or "tool_choice" or "functions" or "function_call" or "parallel_tool_calls" => $"'{field}': tool and function calling is not supported.",
                "audio" or "modalities" => $"'{field}': only text is supported.",
                _ => $"'{field}' is not a supported field.",
            });
        }
    }

    /// <summary>Validates and normalises a request; on failure returns errors keyed by field.</summary>
    public static (GenerationParameters? Parameters, List<ChatMessage>? Messages, Dictionary<string, string[]> Errors) Validate(
        CreateJobRequest r, ProducerOptions options)
    {
        var check = new RequestCheck(r, options);
        var messages = check.Input();
        var maxTokens = check.MaxTokens();
        var (temperature, topP) = check.Sampling();
        var stop = check.Stop();
        check.Limits();
        var logitBias = check.LogitBias();
        foreach (var (field, message) in UnsupportedFields(r))
        {
            check.Error(field, message);
        }

        var logprobs = check.Logprobs();
        var grammar = check.Grammar();
        if (check.Errors.Count > 0)
        {
            return (null, null, check.Errors.ToDictionary(e => e.Key, e => e.Value.ToArray()));
        }

        var parameters = new GenerationParameters
        {
            MaxTokens = maxTokens, Temperature = temperature, TopP = topP, Seed = r.Seed, Stop = stop,
            IgnoreEos = r.IgnoreEos ?? false, MaxGenerationSeconds = r.MaxGenerationSeconds,
            TopK = r.TopK ?? 0, MinP = r.MinP ?? 0f, FrequencyPenalty = r.FrequencyPenalty ?? 0f, PresencePenalty = r.PresencePenalty ?? 0f,
            RepetitionPenalty = r.RepetitionPenalty ?? 1f, LogitBias = logitBias.Count > 0 ? logitBias : null,
            Grammar = grammar,
            Logprobs = logprobs, TopLogprobs = r.TopLogprobs ?? 0, N = r.N ?? 1,
        };
        return (parameters, messages, []);
    }

    /// <summary>One request's checks, each collecting its errors by field (in the order a reader meets the fields).</summary>
    private sealed class RequestCheck(CreateJobRequest r, ProducerOptions options)
    {
        public Dictionary<string, List<string>> Errors { get; } = [];

        public void Error(string field, string message)
        {
            if (!Errors.TryGetValue(field, out var list))
            {
                Errors[field] = list = [];
            }

            list.Add(message);
        }

        /// <summary>Exactly one of <c>prompt</c> and <c>messages</c>, storable, within the prompt limit; the messages, for a chat.</summary>
        public List<ChatMessage>? Input()
        {
            var promptChars = 0;
            List<ChatMessage>? messages = null;
            if (r.Prompt is null && r.Messages is null)
            {
                Error("prompt", "Give either 'prompt' (a completion) or 'messages' (a chat); neither was given.");
            }
            else if (r.Prompt is not null && r.Messages is not null)
            {
                Error("prompt", "Give either 'prompt' or 'messages', not both.");
            }
            else if (r.Prompt is not null)
            {
                if (r.Prompt.Length == 0)
                {
                    Error("prompt", "'prompt' is empty.");
                }

                if (TextInput.HasNul(r.Prompt))
                {
                    Error("prompt", "'prompt' " + TextInput.Problem(r.Prompt));
                }

                promptChars = r.Prompt.Length;
            }
            else
            {
                (messages, promptChars) = Messages(r.Messages!);
            }

            var maxChars = options.EffectiveMaxPromptCharacters;
            if (promptChars > maxChars)
            {
                Error(r.Prompt is not null ? "prompt" : "messages",
                    $"The prompt has {promptChars} characters; the limit for a context of {options.ContextSize} tokens is {maxChars}.");
            }

            return messages;
        }

        private (List<ChatMessage> Messages, int Characters) Messages(List<ChatMessageDto?> given)
        {
            var messages = new List<ChatMessage>();
            var characters = 0;
            if (given.Count == 0)
            {
                Error("messages", "'messages' is empty: give at least one message.");
            }

            for (var i = 0; i < given.Count; i++)
            {
                var m = given[i];
                if (m is null)
                {
                    Error($"messages[{i}]", "A message must be an object with 'role' and 'content'.");
                    continue;
                }

                if (m.Role is null || !Roles.Contains(m.Role))
                {
                    Error($"messages[{i}].role", $"Unknown role '{m.Role?.Replace('\0', '\uFFFD')}': use one of system, developer, user, assistant.");
                }

                if (Content(m.Content, $"messages[{i}].content") is not { } text)
                {
                    continue;
                }

                if (TextInput.HasNul(text))
                {
                    Error($"messages[{i}].content", "'content' " + TextInput.Problem(text));
                }

                characters += text.Length;
                // OpenAI's newer models take the system prompt as a 'developer' message; the model's chat template
                // knows it as the system message.
                messages.Add(new ChatMessage(m.Role == "developer" ? "system" : m.Role ?? "", text));
            }

            return (messages, characters);
        }

        /// <summary>
        /// A message's text: a string, or OpenAI's content parts (<c>[{"type": "text", "text": "..."}]</c>), joined
        /// with newlines as vLLM joins them. Any other part (an image, audio, a file) is refused, named: only text is
        /// served here.
        /// </summary>
        private string? Content(JsonElement? content, string field)
        {
            if (content is { ValueKind: JsonValueKind.String } text)
            {
                return text.GetString()!;
            }

            if (content is not { ValueKind: JsonValueKind.Array } parts || parts.GetArrayLength() == 0)
            {
                Error(field, "'content' must be a string or a non-empty array of text parts ({\"type\": \"text\", \"text\": \"...\"}).");
                return null;
            }

            var texts = new List<string>();
            var index = 0;
            foreach (var part in parts.EnumerateArray())
            {
                var type = part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
                if (type != "text" || !part.TryGetProperty("text", out var value) || value.ValueKind != JsonValueKind.String)
                {
                    Error($"{field}[{index}]", type is null or "text"
                        ? "A content part is {\"type\": \"text\", \"text\": \"...\"}."
                        : $"Content parts of type '{type.Replace('\0', '\uFFFD')}' are not supported: only text is served here.");
                    return null;
                }

                texts.Add(value.GetString()!);
                index++;
            }

            return string.Join("\n", texts);
        }

        /// <summary><c>max_tokens</c> (or <c>max_completion_tokens</c>, which must agree), within the context.</summary>
        public int MaxTokens()
        {
            if (r.MaxTokens is { } legacyMax && r.MaxCompletionTokens is { } completionMax && legacyMax != completionMax)
            {
                Error("max_completion_tokens", $"'max_tokens' ({legacyMax}) and 'max_completion_tokens' ({completionMax}) disagree; give one.");
            }

            var maxTokens = r.MaxTokens ?? r.MaxCompletionTokens ?? Math.Min(options.DefaultMaxTokens, options.ContextSize - 1);
            if (maxTokens < 1 || maxTokens > options.ContextSize - 1)
            {
                Error("max_tokens", $"'max_tokens' must be between 1 and {options.ContextSize - 1} (the context size is {options.ContextSize} tokens); got {maxTokens}.");
            }

            return maxTokens;
        }

        /// <summary><c>temperature</c> and <c>top_p</c>, with OpenAI's defaults.</summary>
        public (float Temperature, float TopP) Sampling()
        {
            var temperature = r.Temperature ?? 1f;
            if (!(temperature >= 0f && temperature <= 2f))
            {
                Error("temperature", $"'temperature' must be between 0 and 2; got {temperature}.");
            }

            var topP = r.TopP ?? 1f;
            if (!(topP > 0f && topP <= 1f))
            {
                Error("top_p", $"'top_p' must be greater than 0 and at most 1; got {topP}.");
            }

            return (temperature, topP);
        }

        /// <summary><c>stop</c>: a string or up to 4, each 1 to 256 storable characters.</summary>
        public List<string> Stop()
        {
            var stop = new List<string>();
            switch (r.Stop)
            {
                case null or { ValueKind: JsonValueKind.Null }:
                    break;
                case { ValueKind: JsonValueKind.String } s:
                    stop.Add(s.GetString()!);
                    break;
                case { ValueKind: JsonValueKind.Array } a when a.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String):
                    stop.AddRange(a.EnumerateArray().Select(e => e.GetString()!));
                    break;
                default:
                    Error("stop", "'stop' must be a string or an array of strings.");
                    break;
            }

            if (stop.Count > 4)
            {
                Error("stop", $"At most 4 stop strings; got {stop.Count}.");
            }

            if (stop.Any(s => s.Length == 0 || s.Length > 256))
            {
                Error("stop", "Each stop string must have 1 to 256 characters.");
            }

            if (stop.Any(TextInput.HasNul))
            {
                Error("stop", "A stop string " + stop.Select(TextInput.Problem).First(p => p is not null));
            }

            return stop;
        }

        /// <summary>The time limits and the other samplers' ranges.</summary>
        public void Limits()
        {
            if (r.QueueTimeoutSeconds is < 1 or > 7 * 24 * 3600)
            {
                Error("queue_timeout_seconds", $"'queue_timeout_seconds' must be between 1 and 604800 (7 days); got {r.QueueTimeoutSeconds}.");
            }

            if (r.MaxGenerationSeconds is < 1 or > 3600)
            {
                Error("max_generation_seconds", $"'max_generation_seconds' must be between 1 and 3600; got {r.MaxGenerationSeconds}.");
            }

            if (r.TopK is < 0 or > 1000)
            {
                Error("top_k", $"'top_k' must be between 0 (off) and 1000; got {r.TopK}.");
            }

            if (r.MinP is { } minP && !(minP >= 0f && minP <= 1f))
            {
                Error("min_p", $"'min_p' must be between 0 and 1; got {minP}.");
            }

            foreach (var (name, value) in new[] { ("frequency_penalty", r.FrequencyPenalty), ("presence_penalty", r.PresencePenalty) })
            {
                if (value is { } v && !(v >= -2f && v <= 2f))
                {
                    Error(name, $"'{name}' must be between -2 and 2; got {v}.");
                }
            }

            if (r.RepetitionPenalty is { } rp && !(rp > 0f && rp <= 2f))
            {
                Error("repetition_penalty", $"'repetition_penalty' must be greater than 0 and at most 2; got {rp}.");
            }
        }

        /// <summary><c>logit_bias</c>: up to 300 token ids with biases from -100 to 100.</summary>
        public Dictionary<int, float> LogitBias()
        {
            var logitBias = new Dictionary<int, float>();
            if (r.LogitBias is not { } bias)
            {
                return logitBias;
            }

            if (bias.Count > 300)
            {
                Error("logit_bias", $"'logit_bias' has at most 300 entries; got {bias.Count}.");
            }

            foreach (var (key, value) in bias)
            {
                if (!int.TryParse(key, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var token))
                {
                    Error("logit_bias", $"'logit_bias' keys are token ids (non-negative integers); got '{key.Replace('\0', '\uFFFD')}'.");
                }
                else if (!(value >= -100f && value <= 100f))
                {
                    Error("logit_bias", $"'logit_bias' values are between -100 and 100; token {token} has {value}.");
                }
                else
                {
                    logitBias[token] = value;
                }
            }

            return logitBias;
        }

        /// <summary><c>logprobs</c>, <c>top_logprobs</c> (which needs it) and <c>n</c>.</summary>
        public bool Logprobs()
        {
            var logprobs = false;
            switch (r.Logprobs)
            {
                case null or { ValueKind: JsonValueKind.Null or JsonValueKind.False }:
                    break;
                case { ValueKind: JsonValueKind.True }:
                    logprobs = true;
                    break;
                default:
                    Error("logprobs", "'logprobs' is true or false; ask for alternatives with 'top_logprobs' (0 to 20).");
                    break;
            }

            if (r.N is < 1 or > 8)
            {
                Error("n", $"'n' (choices) must be between 1 and 8; got {r.N}.");
            }

            if (r.TopLogprobs is < 0 or > 20)
            {
                Error("top_logprobs", $"'top_logprobs' must be between 0 and 20; got {r.TopLogprobs}.");
            }
            else if (r.TopLogprobs is > 0 && !logprobs)
            {
                Error("top_logprobs", "'top_logprobs' needs 'logprobs': true.");
            }

            return logprobs;
        }

        /// <summary>The grammar from <c>response_format</c> or <c>grammar</c> (one of them), which must be able to end.</summary>
        public string? Grammar()
        {
            string? grammar = null;
            try
            {
                grammar = ResponseGrammar(r.ResponseFormat);
            }
            catch (UnsupportedSchemaException e)
            {
                Error("response_format", e.Message);
            }

            if (r.Grammar is { } raw)
            {
                if (grammar is not null)
                {
                    Error("grammar", "Give either 'grammar' or a JSON 'response_format', not both.");
                }
                else if (Gbnf.Check(raw) is { } problem)
                {
                    Error("grammar", $"'grammar' is not a valid llama.cpp grammar (GBNF, start rule 'root'): {problem}");
                }
                else
                {
                    grammar = raw;
                }
            }

            if (grammar is not null && r.IgnoreEos == true)
            {
                Error("ignore_eos", "'ignore_eos' cannot be combined with a grammar or a JSON response_format: the output must be able to end.");
            }

            return grammar;
        }
    }
}
