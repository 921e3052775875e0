namespace LlmServing.Tests.Infrastructure;

/// <summary>Waits for a condition the system reaches asynchronously, failing the test when it does not in time.</summary>
public static class Eventually
{
    public static Task WaitUntilAsync(Func<bool> condition, int timeoutSeconds = 30, int pollMilliseconds = 100) =>
        WaitUntilAsync(() => Task.FromResult(condition()), timeoutSeconds, pollMilliseconds);

    public static async Task WaitUntilAsync(Func<Task<bool>> condition, int timeoutSeconds = 30, int pollMilliseconds = 20)
    {
        var deadline = DateTime.UtcNow.AddSeconds(timeoutSeconds);
        while (!await condition())
        {
            Assert.That(DateTime.UtcNow, Is.LessThan(deadline), "condition not met in time");
            await Task.Delay(pollMilliseconds);
        }
    }
}
