namespace LlmServing.Contracts;

/// <summary>Job statuses as they appear in the API and the database.</summary>
public static class JobStatuses
{
    /// <summary>Accepted and durable; waiting for a worker.</summary>
    public const string Queued = "queued";

    /// <summary>Claimed by a worker.</summary>
    public const string Running = "running";

    /// <summary>Final: output written.</summary>
    public const string Succeeded = "succeeded";

    /// <summary>Final: the job could not run; see its error.</summary>
    public const string Failed = "failed";

    /// <summary>Final: cancelled by the user.</summary>
    public const string Cancelled = "cancelled";

    /// <summary>Final: its deadline passed before a worker started it.</summary>
    public const string Expired = "expired";

    /// <summary>True for statuses a job never leaves.</summary>
    public static bool IsFinal(string status) => status is Succeeded or Failed or Cancelled or Expired;

    /// <summary>The final statuses, for queries (the same set as <see cref="IsFinal"/>).</summary>
    public static string[] Final => [Succeeded, Failed, Cancelled, Expired];

    /// <summary>Every status, in lifecycle order.</summary>
    public static string[] All => [Queued, Running, Succeeded, Failed, Cancelled, Expired];
}
