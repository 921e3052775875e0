using System.Text;
using LLama;
using LLama.Native;
using LlmServing.Contracts;

namespace LlmServing.GpuWorker.Inference;

/// <summary>
/// Turns a request into prompt tokens. User text is always tokenized with <c>special: false</c>, so text such as
/// <c>&lt;/s&gt;</c> stays text and never becomes a control token. Chat messages use the model's own chat template
/// when the GGUF has one (the template's markup may hold special tokens; the message contents still may not), and a
/// plain "Role: content" transcript otherwise.
/// </summary>
public sealed class PromptRenderer(LLamaWeights model)
{
    private readonly bool _hasTemplate = model.Metadata.ContainsKey("tokenizer.chat_template");

    public LLamaToken[] Render(GenerationRequest request, LLamaContext context)
    {
        if (request.Prompt is not null)
        {
            return context.Tokenize(request.Prompt, addBos: true, special: false);
        }

        var messages = request.Messages ?? [];
        return _hasTemplate ? RenderTemplate(messages, context) : RenderPlain(messages, context);
    }

    private static LLamaToken[] RenderPlain(IReadOnlyList<ChatMessage> messages, LLamaContext context)
    {
        var text = new StringBuilder();
        foreach (var m in messages)
        {
            text.Append(char.ToUpperInvariant(m.Role[0])).Append(m.Role.AsSpan(1)).Append(": ").Append(m.Content).Append('\n');
        }

        text.Append("Assistant:");
        return context.Tokenize(text.ToString(), addBos: true, special: false);
    }

    private LLamaToken[] RenderTemplate(IReadOnlyList<ChatMessage> messages, LLamaContext context)
    {
        // Render with a unique marker in place of each content, then tokenize the template's markup with special
        // tokens enabled and each content with them disabled.
        var marker = $"\u0001{Guid.NewGuid():N}\u0001";
        var template = new LLamaTemplate(model) { AddAssistant = true };
        foreach (var m in messages)
        {
            template.Add(m.Role, marker);
        }

        var rendered = Encoding.UTF8.GetString(template.Apply());
        var parts = rendered.Split(marker);
        var tokens = new List<LLamaToken>();
        for (var i = 0; i < parts.Length; i++)
        {
            if (parts[i].Length > 0)
            {
                tokens.AddRange(i == 0
                    ? context.Tokenize(parts[i], addBos: true, special: true)
                    : Continue(parts[i], special: true, context));
            }

            if (i < messages.Count && i < parts.Length - 1)
            {
                tokens.AddRange(Continue(messages[i].Content, special: false, context));
            }
        }

        return [.. tokens];
    }

    /// <summary>
    /// Tokenizes text that continues a prompt. SentencePiece tokenizers prefix every tokenize call with a space, which
    /// is right at the start of a prompt but not in its middle; so the text is tokenized behind a newline and the
    /// newline's tokens are cut off again (falling back to a plain call if the tokenizer merged across them).
    /// </summary>
    private static LLamaToken[] Continue(string text, bool special, LLamaContext context)
    {
        var prefix = context.Tokenize("\n", addBos: false, special: false);
        var all = context.Tokenize("\n" + text, addBos: false, special: special);
        return all.AsSpan().StartsWith(prefix) ? all[prefix.Length..] : context.Tokenize(text, addBos: false, special: special);
    }
}
