namespace LlmServing.Producer.Application;

/// <summary>The rule for a tenant's overrides, which the usage API and the console's tenant page both apply.</summary>
public static class TenantSettingsRule
{
    /// <summary>A tenant's overrides (null: the deployment's default): retention 1 to 3650 days, max enqueued tokens 0 (no limit) or more.</summary>
    public static bool IsValid(int? jobRetentionDays, long? maxEnqueuedTokens) =>
        jobRetentionDays is not (< 1 or > 3650) && maxEnqueuedTokens is not < 0;
}
