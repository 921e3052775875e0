namespace LlmServing.Tests.Infrastructure;

/// <summary>The checkout the tests run from.</summary>
public static class Repository
{
    /// <summary>The folder holding <c>LlmServing.sln</c>, above the test binaries.</summary>
    public static string Root
    {
        get
        {
            for (var directory = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); directory is not null; directory = directory.Parent)
            {
                if (File.Exists(Path.Combine(directory.FullName, "LlmServing.sln")))
                {
                    return directory.FullName;
                }
            }

            throw new InvalidOperationException($"No LlmServing.sln above {TestContext.CurrentContext.TestDirectory}.");
        }
    }
}
