using System.Text.RegularExpressions;
using LlmServing.Contracts;
using LlmServing.ResultStore;

namespace LlmServing.Tests;

/// <summary>The SQL lists of final statuses name exactly the vocabulary's final statuses.</summary>
public sealed class StatusSqlTests
{
    private static string[] Listed(string sql) => Regex.Matches(sql, "'([a-z_]+)'").Select(m => m.Groups[1].Value).ToArray();

    [Test]
    public void ShouldListEveryFinalJobStatus_WhenQueriesNameThem() =>
        Assert.That(Listed(StatusSql.FinalJobs), Is.EquivalentTo(JobStatuses.Final));

    [Test]
    public void ShouldListTheBatchStatusesABatchNeverLeaves() =>
        Assert.That(Listed(StatusSql.FinalBatches), Is.EquivalentTo(new[] { "completed", "failed", "cancelled", "expired" }));
}
