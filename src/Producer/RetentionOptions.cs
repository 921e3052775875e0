namespace LlmServing.Producer;

/// <summary>Options of section <c>Retention</c>. A zero period keeps things forever.</summary>
public sealed class RetentionOptions
{
    public const string Section = "Retention";

    /// <summary>Final jobs (and finished batches, with their lines) are deleted this long after they ended; tenants may override it.</summary>
    public TimeSpan Jobs { get; set; } = TimeSpan.FromDays(30);

    /// <summary>Uploaded batch input files expire this long after upload unless the upload says otherwise (<c>expires_after</c>).</summary>
    public TimeSpan BatchFiles { get; set; } = TimeSpan.FromDays(30);

    /// <summary>Batch output and error files expire this long after they are written unless the batch says (<c>output_expires_after</c>).</summary>
    public TimeSpan OutputFiles { get; set; } = TimeSpan.FromDays(30);

    /// <summary>Finished webhook deliveries are kept this long.</summary>
    public TimeSpan DeliveryLog { get; set; } = TimeSpan.FromDays(30);

    /// <summary>How often the clean-up runs.</summary>
    public TimeSpan Interval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Rows deleted per statement (each statement is its own short transaction).</summary>
    public int PageSize { get; set; } = 1000;

    /// <summary>When something created now expires under <paramref name="period"/>; null when it is kept.</summary>
    public static DateTimeOffset? ExpiryOf(DateTimeOffset now, TimeSpan period) => period > TimeSpan.Zero ? now + period : null;
}
