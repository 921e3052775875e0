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

    /// <summary>
    /// An absence check: polls <paramref name="condition"/> for the whole <paramref name="window"/> and fails the test
    /// the moment it holds (a duplicate arrived, a message was dropped, a worker stopped). The window is how long the
    /// test watches, not a guess at how long the system takes to do something.
    /// </summary>
    public static async Task NeverWithinAsync(Func<Task<bool>> condition, TimeSpan window, string because, int pollMilliseconds = 50)
    {
        var deadline = DateTime.UtcNow + window;
        while (DateTime.UtcNow < deadline)
        {
            Assert.That(await condition(), Is.False, because);
            await Task.Delay(pollMilliseconds);
        }

        Assert.That(await condition(), Is.False, because);
    }

    public static Task NeverWithinAsync(Func<bool> condition, TimeSpan window, string because, int pollMilliseconds = 50) =>
        NeverWithinAsync(() => Task.FromResult(condition()), window, because, pollMilliseconds);

    /// <summary>Waits until <paramref name="probe"/> returns a value (not null) and returns it.</summary>
    public static Task<T> ValueAsync<T>(Func<T?> probe, TimeSpan? timeout = null) where T : class =>
        ValueAsync(() => Task.FromResult(probe()), timeout);

    public static async Task<T> ValueAsync<T>(Func<Task<T?>> probe, TimeSpan? timeout = null) where T : class
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (true)
        {
            if (await probe() is { } value)
            {
                return value;
            }

            Assert.That(DateTime.UtcNow, Is.LessThan(deadline), "the value did not appear in time");
            await Task.Delay(50);
        }
    }
}
