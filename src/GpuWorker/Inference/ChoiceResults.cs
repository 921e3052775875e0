namespace LlmServing.GpuWorker.Inference;

/// <summary>
/// The <c>n &gt; 1</c> choices of one request: each choice is its own sequence (forked from the first one's prefill),
/// and the request completes once every choice has ended, with the first choice as the main text and the completion
/// tokens of all of them.
/// </summary>
internal static class ChoiceResults
{
    /// <summary>Records how <paramref name="s"/> ended; completes its request when it was the last choice running.</summary>
    public static void Record(ActiveSequence s, string reason)
    {
        var n = s.Pending.Request.Parameters.N;
        if (n <= 1)
        {
            s.Pending.Complete(s.Outcome(reason));
            return;
        }

        var choices = s.Pending.Choices ??= new GenerationChoice?[n];
        choices[s.ChoiceIndex] = s.Choice(reason);
        if (!s.Pending.Forked)
        {
            // Ended before its prefill was forked (cancelled, time limit): the other choices end the same way, empty.
            for (var k = 0; k < n; k++)
            {
                choices[k] ??= new GenerationChoice(k, "", reason, 0, s.Pending.Request.Parameters.Logprobs ? [] : null);
            }
        }

        if (choices.All(c => c is not null))
        {
            var all = choices.Select(c => c!).ToList();
            s.Pending.Complete(new GenerationOutcome(all[0].Text, all[0].FinishReason, s.Pending.Tokens!.Length, all.Sum(c => c.CompletionTokens))
            {
                CachedTokens = s.Pending.CachedTokens,
                Logprobs = all[0].Logprobs,
                Choices = all,
                AdmittedAt = s.AdmittedAt,
                FirstTokenAt = s.FirstTokenAt,
            });
        }
    }

    /// <summary>
    /// The first choice of a request owns the prompt's KV cells; when it ends before the others, the cells pass to
    /// another choice still running, so that they are freed with the last one.
    /// </summary>
    public static void HandOverPrompt(IReadOnlyList<ActiveSequence> active, int index)
    {
        var s = active[index];
        if (s.OwnsPrompt && s.Pending.Request.Parameters.N > 1
            && active.Where((a, i) => i != index && a.Pending == s.Pending).FirstOrDefault() is { } heir)
        {
            s.HandPromptTo(heir);
        }
    }
}
