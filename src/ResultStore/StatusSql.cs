using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;

namespace LlmServing.ResultStore;

/// <summary>
/// The final statuses as SQL lists, built from the status vocabularies at compile time: the one place a query or a
/// partial index names them. They stay literals (not parameters) because PostgreSQL matches a partial index's
/// predicate only against literal text in the query.
/// </summary>
public static class StatusSql
{
    /// <summary><c>('succeeded', 'failed', 'cancelled', 'expired')</c>: <see cref="JobStatuses.Final"/>.</summary>
    public const string FinalJobs = $"('{JobStatuses.Succeeded}', '{JobStatuses.Failed}', '{JobStatuses.Cancelled}', '{JobStatuses.Expired}')";

    /// <summary><c>('completed', 'failed', 'cancelled', 'expired')</c>: the batch statuses a batch never leaves.</summary>
    public const string FinalBatches = $"('{BatchStatuses.Completed}', '{BatchStatuses.Failed}', '{BatchStatuses.Cancelled}', '{BatchStatuses.Expired}')";
}
