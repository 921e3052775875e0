using Microsoft.Playwright;

namespace LlmServing.Tests.Infrastructure;

/// <summary>
/// A real Chromium (Debian's <c>chromium</c> package, launched by its path: Playwright's own browser download is not
/// used) driven by Playwright, on the operator console of a test Producer. Records every console error and uncaught
/// page error of the pages it opens.
/// </summary>
public sealed class ConsoleBrowser : IAsyncDisposable
{
    private readonly IPlaywright _playwright;
    private readonly IBrowser _browser;
    private readonly List<string> _errors = [];
    private readonly List<IBrowserContext> _contexts = [];

    private ConsoleBrowser(IPlaywright playwright, IBrowser browser)
    {
        _playwright = playwright;
        _browser = browser;
    }

    /// <summary>The Chromium executable: <c>$LLMSERVING_CHROMIUM</c>, else Debian's <c>/usr/bin/chromium</c>.</summary>
    public static string Executable => Environment.GetEnvironmentVariable("LLMSERVING_CHROMIUM") is { Length: > 0 } path ? path : "/usr/bin/chromium";

    /// <summary>Console and page errors seen so far, with the page they came from.</summary>
    public IReadOnlyList<string> Errors
    {
        get
        {
            lock (_errors)
            {
                return [.. _errors];
            }
        }
    }

    /// <summary>Closes every page opened so far (their live refresh stops with them).</summary>
    public async Task CloseAllAsync()
    {
        foreach (var context in _contexts)
        {
            await context.CloseAsync();
        }

        _contexts.Clear();
    }

    /// <summary>Starts a test's record afresh.</summary>
    public void ClearErrors()
    {
        lock (_errors)
        {
            _errors.Clear();
        }
    }

    /// <summary>
    /// Forgets Chromium's "Failed to load resource" lines for pages a test opened on purpose with these statuses (the
    /// browser logs every 4xx page load as a console error).
    /// </summary>
    public void ForgetExpectedStatuses(params int[] statuses)
    {
        lock (_errors)
        {
            _errors.RemoveAll(e => statuses.Any(s => e.Contains($"Failed to load resource: the server responded with a status of {s} ", StringComparison.Ordinal)));
        }
    }

    public static async Task<ConsoleBrowser> LaunchAsync()
    {
        Assert.That(File.Exists(Executable), Is.True, $"Chromium not found at {Executable}: scripts/test.sh installs Debian's chromium package");
        var playwright = await Playwright.CreateAsync();
        var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = Executable,
            Headless = true,
            // Loopback only: no update checks, sync, QUIC or other background traffic (this machine's network is closed).
            Args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-default-apps"],
        });
        return new ConsoleBrowser(playwright, browser);
    }

    /// <summary>A fresh browser profile (no cookies) on <paramref name="baseAddress"/>.</summary>
    public async Task<IPage> NewPageAsync(Uri baseAddress)
    {
        var context = await _browser.NewContextAsync(new BrowserNewContextOptions
        {
            BaseURL = baseAddress.ToString().TrimEnd('/'),
            ViewportSize = new ViewportSize { Width = 1280, Height = 900 },
        });
        context.SetDefaultTimeout(30_000);
        _contexts.Add(context);
        var page = await context.NewPageAsync();
        page.Console += (_, message) =>
        {
            if (message.Type == "error")
            {
                lock (_errors)
                {
                    _errors.Add($"{page.Url}: {message.Text}");
                }
            }
        };
        page.PageError += (_, error) =>
        {
            lock (_errors)
            {
                _errors.Add($"{page.Url}: uncaught {error}");
            }
        };
        return page;
    }

    /// <summary>Opens the console and signs in with <paramref name="key"/> (the admin key or a tenant's).</summary>
    public async Task<IPage> SignInAsync(Uri baseAddress, string key)
    {
        var page = await NewPageAsync(baseAddress);
        await page.GotoAsync("/console");
        Assert.That(new Uri(page.Url).AbsolutePath, Is.EqualTo("/console/login"), "the console sends a visitor without a session to sign in");
        await page.FillAsync("#key", key);
        await page.ClickAsync("#sign-in");
        await page.WaitForURLAsync(url => new Uri(url).AbsolutePath == "/console");
        return page;
    }

    public async ValueTask DisposeAsync()
    {
        await _browser.DisposeAsync();
        _playwright.Dispose();
    }
}
