using System.ComponentModel.DataAnnotations;
using LlmServing.Contracts;

namespace LlmServing.Producer;

/// <summary>Settings of the Producer API (section <c>Producer</c>).</summary>
public sealed class ProducerOptions
{
    public const string Section = "Producer";

    /// <summary>Queue the jobs are sent to; declared at start-up so it exists before any worker runs.</summary>
    [Required]
    public string JobQueue { get; set; } = QueueNames.Jobs;

    /// <summary>
    /// The workers' context size in tokens. The Producer has no tokenizer, so it rejects only what it can know:
    /// <c>max_tokens</c> above this, and prompts longer than <see cref="MaxPromptCharacters"/>. The worker fails a job
    /// whose tokenized prompt plus <c>max_tokens</c> does not fit.
    /// </summary>
    [Range(128, 1 << 20)]
    public int ContextSize { get; set; } = 4096;

    /// <summary>Longest prompt (all message contents together) in characters; 0 means 8 per context token.</summary>
    [Range(0, int.MaxValue)]
    public int MaxPromptCharacters { get; set; }

    /// <summary><c>max_tokens</c> when the request does not say.</summary>
    [Range(1, 1 << 20)]
    public int DefaultMaxTokens { get; set; } = 128;

    /// <summary>Largest accepted body of <c>POST /v1/jobs</c>, in bytes (413 above).</summary>
    [Range(1024, 64 << 20)]
    public int MaxRequestBytes { get; set; } = 1 << 20;

    /// <summary>How long a request waits for the broker's confirm before leaving the job to the sweep.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:01:00")]
    public TimeSpan PublishTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How often the sweep looks for accepted jobs the broker never confirmed.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "01:00:00")]
    public TimeSpan SweepInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Age before an unconfirmed job is republished by the sweep (leaves in-flight requests alone).</summary>
    [Range(typeof(TimeSpan), "00:00:00", "01:00:00")]
    public TimeSpan SweepMinAge { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Longest long-poll (<c>GET /v1/jobs/{id}?wait=</c>) in seconds.</summary>
    [Range(0, 600)]
    public int MaxWaitSeconds { get; set; } = 60;

    public int EffectiveMaxPromptCharacters => MaxPromptCharacters > 0 ? MaxPromptCharacters : ContextSize * 8;
}
