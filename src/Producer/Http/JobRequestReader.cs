using System.Text.Json;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Http;

/// <summary>The HTTP side of a job request, shared by <c>/v1/jobs</c> and the OpenAI endpoints: content type, size, storable text, JSON.</summary>
public sealed class JobRequestReader(IOptions<ProducerOptions> options, IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions> json)
{
    /// <summary>Reads a job request from a JSON body (capped at <c>Producer:MaxRequestBytes</c>); or the problem to answer.</summary>
    public async Task<(CreateJobRequest? Request, IResult? Problem)> ReadAsync(HttpRequest http, CancellationToken ct)
    {
        var o = options.Value;
        if (!http.HasJsonContentType())
        {
            return (null, Problems.Of(StatusCodes.Status415UnsupportedMediaType, "Unsupported content type",
                $"Send the job as JSON with 'Content-Type: application/json' (got '{http.ContentType ?? "none"}')."));
        }

        var body = http.ContentLength > o.MaxRequestBytes ? null : await RequestBodies.ReadLimitedAsync(http.Body, o.MaxRequestBytes, ct);
        if (body is null)
        {
            return (null, Problems.Of(StatusCodes.Status413PayloadTooLarge, "Request too large",
                $"A job request has at most {o.MaxRequestBytes} bytes; for many requests use a batch file."));
        }

        if (TextInput.FirstUnstorable(body) is var (field, problem))
        {
            return (null, TypedResults.Problem(new HttpValidationProblemDetails(new Dictionary<string, string[]> { [field] = [$"'{field}' {problem}"] })
            {
                Status = StatusCodes.Status422UnprocessableEntity,
                Title = "The job request is invalid",
                Type = "https://tools.ietf.org/html/rfc4918#section-11.2",
            }));
        }

        try
        {
            return JsonSerializer.Deserialize<CreateJobRequest>(body, json.Value.SerializerOptions) is { } request
                ? (request, null)
                : (null, Problems.Of(StatusCodes.Status400BadRequest, "Malformed JSON", "The body must be a JSON object, not null."));
        }
        catch (JsonException e)
        {
            return (null, Problems.Of(StatusCodes.Status400BadRequest, "Malformed JSON", $"The body is not a valid job request: {e.Message}"));
        }
    }
}
