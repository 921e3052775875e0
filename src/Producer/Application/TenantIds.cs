
namespace LlmServing.Producer.Application;

/// <summary>The one rule for a tenant id, wherever one is given (API keys, tenant settings, the console).</summary>
public static class TenantIds
{
    public const int MaxLength = 64;

    public const string Rule = "A tenant id has 1 to 64 characters, not only spaces.";

    /// <summary>Why <paramref name="tenant"/> cannot be a tenant id, or null when it can.</summary>
    public static string? Problem(string? tenant) =>
        string.IsNullOrWhiteSpace(tenant) || tenant.Length > MaxLength ? Rule
        : TextInput.Problem(tenant) is { } text ? "The tenant id " + text
        : null;
}
