using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmServing.ResultStore.Jobs;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Http;

/// <summary>
/// <c>GET /v1/jobs/{id}/stream</c>: Server-Sent Events with the text as it is generated, then the final job. Each
/// <c>delta</c> event's id is the length of the text sent so far, so a client that reconnects with
/// <c>Last-Event-ID</c> (browsers' EventSource do) gets exactly the rest: nothing missed, nothing repeated.
/// </summary>
public static class JobStreamApi
{
    public static IEndpointRouteBuilder MapJobStreamApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/jobs/{id:guid}/stream", StreamAsync)
            .WithTags("Jobs")
            .WithSummary("Stream a job's text as it is generated (Server-Sent Events)")
            .WithDescription("Events: `delta` (`{\"text\"}`, id = characters sent so far) while it runs, then `done` with the job. " +
                             "Reconnect with `Last-Event-ID` (or `?last_event_id=`) to resume. Interactive jobs stream token by token " +
                             "(about every 100 ms); batch lines send their text at the end.")
            .ProducesProblem(StatusCodes.Status404NotFound);
        return app;
    }

    private static async Task StreamAsync(Guid id, HttpContext http, JobStore store, JobFollower follower, IOptions<JsonOptions> json, int? last_event_id)
    {
        var ct = http.RequestAborted;
        var offsetText = http.Request.Headers["Last-Event-ID"].ToString();
        var offset = last_event_id ?? (int.TryParse(offsetText, out var o) ? o : 0);
        if (offset < 0)
        {
            await Problems.Of(StatusCodes.Status400BadRequest, "Invalid Last-Event-ID", "The event id is a number of characters, 0 or more.").ExecuteAsync(http);
            return;
        }

        if (await store.FindAsync(id, http.Tenant(), ct) is null)
        {
            await Problems.Of(StatusCodes.Status404NotFound, "Job not found", $"There is no job with id {id}.").ExecuteAsync(http);
            return;
        }

        await StartAsync(http);
        try
        {
            await foreach (var update in follower.FollowAsync(id, http.Tenant(), offset, TimeSpan.FromSeconds(15), ct))
            {
                if (update.Delta is { } delta)
                {
                    await WriteAsync(http, "delta", new JsonObject { ["text"] = delta }.ToJsonString(), update.Offset, ct);
                }
                else if (update.IsFinal)
                {
                    await WriteAsync(http, "done", JsonSerializer.Serialize(JobsApi.ToResponse(update.Job), json.Value.SerializerOptions), update.Offset, ct);
                }
                else
                {
                    await http.Response.WriteAsync(": keep-alive\n\n", ct);
                    await http.Response.Body.FlushAsync(ct);
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // The client left; it may reconnect with Last-Event-ID.
        }
    }

    /// <summary>Sends the headers of an event stream.</summary>
    public static Task StartAsync(HttpContext http)
    {
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        http.Response.Headers["X-Accel-Buffering"] = "no"; // proxies: do not buffer
        return http.Response.StartAsync();
    }

    /// <summary>One event: optional name and id, then the data (one line of JSON).</summary>
    public static async Task WriteAsync(HttpContext http, string? name, string data, int? id, CancellationToken ct)
    {
        var text = new StringBuilder();
        if (id is { } i)
        {
            text.Append("id: ").Append(i).Append('\n');
        }

        if (name is not null)
        {
            text.Append("event: ").Append(name).Append('\n');
        }

        text.Append("data: ").Append(data).Append("\n\n");
        await http.Response.WriteAsync(text.ToString(), ct);
        await http.Response.Body.FlushAsync(ct);
    }
}
