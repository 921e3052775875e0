using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Http;

namespace LlmServing.Tests.Infrastructure;

/// <summary>
/// A webhook target on 127.0.0.1 (the only address these tests may reach): records every request it receives and
/// answers 200, or 500 for the next N requests to a path it was told to fail.
/// </summary>
public sealed class WebhookReceiver : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly ConcurrentDictionary<string, int> _failures = new();
    private readonly int _port;

    public sealed record Request(string Path, string Body, IHeaderDictionary Headers, int Answer);

    public ConcurrentQueue<Request> Received { get; } = new();

    private WebhookReceiver(int port)
    {
        _port = port;
        _listener.Prefixes.Add($"http://127.0.0.1:{port}/");
        _listener.Start();
        _ = Task.Run(LoopAsync);
    }

    public static WebhookReceiver Start() => new(AppProcess.FreePort());

    public string Url(string path) => $"http://127.0.0.1:{_port}/{path}";

    /// <summary>The next <paramref name="times"/> requests to /<paramref name="path"/> answer 500.</summary>
    public void FailNext(string path, int times) => _failures["/" + path] = times;

    private async Task LoopAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception) when (!_listener.IsListening)
            {
                return;
            }
            catch (HttpListenerException)
            {
                return;
            }

            using var reader = new StreamReader(context.Request.InputStream);
            var body = await reader.ReadToEndAsync();
            var headers = new HeaderDictionary();
            foreach (var name in context.Request.Headers.AllKeys)
            {
                headers[name!] = context.Request.Headers[name];
            }

            var path = context.Request.Url!.AbsolutePath;
            var fail = _failures.TryGetValue(path, out var left) && left > 0 && _failures.TryUpdate(path, left - 1, left);
            var answer = fail ? 500 : 200;
            Received.Enqueue(new Request(path, body, headers, answer));
            context.Response.StatusCode = answer;
            context.Response.Close();
        }
    }

    public void Dispose() => _listener.Close();
}
