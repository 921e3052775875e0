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

    /// <summary>How often the job reaper looks for running jobs whose lease lapsed and queued jobs whose message is lost.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "01:00:00")]
    public TimeSpan ReaperInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// The workers' job lease (<c>Worker:JobLease</c>): the reaper judges leases only after reaching PostgreSQL for
    /// this long, so that workers renew theirs after an outage first.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:01", "01:00:00")]
    public TimeSpan JobLease { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// A queued job confirmed by the broker this long ago, while its queue holds no ready message, lost its message
    /// (dead-lettered or purged) and is sent again.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:01", "1.00:00:00")]
    public TimeSpan LostMessageAge { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Longest long-poll (<c>GET /v1/jobs/{id}?wait=</c>) in seconds.</summary>
    [Range(0, 600)]
    public int MaxWaitSeconds { get; set; } = 60;

    /// <summary>
    /// <c>/v1/chat/completions</c> and <c>/v1/completions</c>: how long a request waits for a worker to start its job
    /// (workers may be at zero and starting); after that the job is cancelled and the answer is 503 with Retry-After.
    /// </summary>
    public TimeSpan SyncStartTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>The longest a synchronous completion waits in all; then its job is cancelled and the answer is 504.</summary>
    public TimeSpan SyncTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>The model name <c>GET /v1/models</c> lists (any <c>model</c> a client sends runs on the workers' model).</summary>
    public string ModelName { get; set; } = "llmserving";

    /// <summary>Queue of batch lines (a separate queue, so batch lines never sit in front of interactive jobs).</summary>
    [Required]
    public string BatchJobQueue { get; set; } = QueueNames.BatchJobs;

    /// <summary>Largest uploaded file (413 above).</summary>
    [Range(1024, 16L << 30)]
    public long MaxFileBytes { get; set; } = 200L << 20;

    /// <summary>Largest line of a batch file; a longer line fails with its own error.</summary>
    [Range(1024, 64 << 20)]
    public int MaxLineBytes { get; set; } = 1 << 20;

    /// <summary>Most requests (non-blank lines) in one batch file, as OpenAI's 50,000; a longer file fails the batch.</summary>
    [Range(1, 10_000_000)]
    public int MaxBatchRequests { get; set; } = 50_000;

    /// <summary>Lines per ingestion chunk: one binary COPY and one progress update per chunk (resume point).</summary>
    [Range(1, 1_000_000)]
    public int IngestionChunkLines { get; set; } = 2000;

    /// <summary>Messages in flight at once while publishing a batch's lines.</summary>
    [Range(1, 4096)]
    public int PublishConcurrency { get; set; } = 1000;

    /// <summary>
    /// Fair share in the batch lane (ADR 0007): at most this many lines of one tenant are in the broker or running at
    /// once; the rest wait in PostgreSQL and are released as lines finish, tenants side by side. Set it at least to the
    /// slots of all workers, or one tenant alone cannot fill them.
    /// </summary>
    public int BatchWindowPerTenant { get; set; } = 256;

    /// <summary>How often the batch releaser looks for room in tenants' windows.</summary>
    public TimeSpan ReleaseInterval { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>How often batches are checked for their end (all lines final, expiry, cancellation).</summary>
    [Range(typeof(TimeSpan), "00:00:00.050", "00:10:00")]
    public TimeSpan FinalizeInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// A batch still validating, or running with lines not yet confirmed by the broker, whose ingestion shows no
    /// progress for this long is resumed from its recorded offset (the process running it died, or its job was lost).
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:01", "01:00:00")]
    public TimeSpan IngestionStallTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Hangfire queue this Producer's ingestion jobs use; empty means one derived from <see cref="JobQueue"/>, so
    /// Producers of different deployments sharing a database never run each other's ingestion.
    /// </summary>
    public string IngestionQueue { get; set; } = "";

    public string EffectiveIngestionQueue => IngestionQueue.Length > 0
        ? IngestionQueue
        : new string(JobQueue.ToLowerInvariant().Select(c => char.IsAsciiLetterOrDigit(c) ? c : '_').ToArray());

    /// <summary>
    /// The admin key (from configuration or environment only). Empty: no API keys, one default tenant (local use).
    /// Set: every /v1 call needs a tenant's key, and this key creates and revokes them.
    /// </summary>
    public string AdminKey { get; set; } = "";

    /// <summary>
    /// Refuse to start without an admin key (16+ characters). The deployment files (compose, Kubernetes) set it, so
    /// that a Producer reachable by others never runs with the API open; a local quick start leaves it off.
    /// </summary>
    public bool RequireAdminKey { get; set; }

    /// <summary>Job submissions per second per tenant (token bucket, burst = 2 seconds' worth); 0 turns it off.</summary>
    [Range(0, 1_000_000)]
    public double RateLimitPerSecond { get; set; }

    /// <summary>Most queued (not yet started) interactive jobs per tenant; 0 turns the cap off.</summary>
    [Range(0, int.MaxValue)]
    public int MaxQueuedJobsPerTenant { get; set; }

    /// <summary>
    /// The most enqueued batch work a tenant may have, in estimated tokens (prompt characters / 4 + max_tokens per
    /// line; a file not read yet counts its size / 4), checked when a batch is created (429 above it). 0: no limit.
    /// A tenant's own setting (<c>/v1/admin/tenants/{tenant}/settings</c>) replaces it.
    /// </summary>
    public long MaxEnqueuedTokensPerTenant { get; set; }

    public int EffectiveMaxPromptCharacters => MaxPromptCharacters > 0 ? MaxPromptCharacters : ContextSize * 8;
}
