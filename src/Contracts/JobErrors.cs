namespace LlmServing.Contracts;

/// <summary>
/// The errors a worker gives a job that cannot run as asked (the request, not the system, is at fault), by the start
/// of their text: the Producer's synchronous OpenAI endpoints answer them 400 as OpenAI does, not 500.
/// </summary>
public static class JobErrors
{
    /// <summary>The prompt plus <c>max_tokens</c> does not fit the worker's context.</summary>
    public const string ContextOverflowStart = "The prompt (";

    /// <summary>Other requests the worker refuses before generating (vocabulary, grammar, slots).</summary>
    public static readonly string[] InvalidRequestStarts =
        ["logit_bias names token", "The grammar is not valid", "n = "];

    /// <summary>OpenAI's error code for a job error: <c>context_length_exceeded</c>, <c>invalid_request</c>, or null.</summary>
    public static string? RequestErrorCode(string? error) =>
        error is null ? null
        : error.StartsWith(ContextOverflowStart, StringComparison.Ordinal) ? "context_length_exceeded"
        : InvalidRequestStarts.Any(s => error.StartsWith(s, StringComparison.Ordinal)) ? "invalid_request"
        : null;
}
