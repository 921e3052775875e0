using LlmServing.Producer.Batches;
using LlmServing.ResultStore.Files;
using LlmServing.Producer.Tenants;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;

namespace LlmServing.Producer.Files;

/// <summary>OpenAI-compatible <c>/v1/files</c>: upload (streamed into PostgreSQL), metadata and content.</summary>
public static class FilesApi
{
    public static IEndpointRouteBuilder MapFilesApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/files").WithTags("Files");
        group.MapPost("", UploadAsync)
            .WithSummary("Upload a batch input file")
            .WithDescription("multipart/form-data with `file` (JSONL) and `purpose=batch`. Streamed to storage, never held in memory.")
            .Produces(StatusCodes.Status200OK)
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status415UnsupportedMediaType);
        group.MapGet("/{id}", GetAsync).WithSummary("Get a file object").ProducesProblem(StatusCodes.Status404NotFound);
        group.MapGet("/{id}/content", ContentAsync).WithSummary("Download a file's content").ProducesProblem(StatusCodes.Status404NotFound);
        return app;
    }

    private static async Task<IResult> UploadAsync(HttpRequest http, FileStore files, IOptions<ProducerOptions> options, CancellationToken ct)
    {
        var o = options.Value;
        if (!MediaTypeHeaderValue.TryParse(http.ContentType, out var type) || !type.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase)
            || HeaderUtilities.RemoveQuotes(type.Boundary).Value is not { Length: > 0 } boundary)
        {
            return Problems.Of(StatusCodes.Status415UnsupportedMediaType, "Unsupported content type",
                "Upload files as multipart/form-data with a 'file' part and 'purpose=batch'.");
        }

        AllowBody(http, o.MaxFileBytes + (1 << 20));
        var reader = new MultipartReader(boundary, http.Body);
        string? purpose = null;
        StoredFile? stored = null;
        try
        {
            while (await reader.ReadNextSectionAsync(ct) is { } section)
            {
                if (!ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var disposition))
                {
                    continue;
                }

                var name = HeaderUtilities.RemoveQuotes(disposition.Name).Value;
                if (name == "purpose")
                {
                    purpose = (await new StreamReader(section.Body).ReadToEndAsync(ct)).Trim();
                    if (purpose != "batch")
                    {
                        break;
                    }
                }
                else if (name == "file" && stored is null)
                {
                    var filename = HeaderUtilities.RemoveQuotes(disposition.FileName.HasValue ? disposition.FileName : disposition.FileNameStar).Value ?? "upload.jsonl";
                    stored = await files.CreateAsync(http.HttpContext.Tenant(), filename, "batch", section.Body, o.MaxFileBytes, ct);
                }
            }
        }
        catch (FileTooLargeException e)
        {
            return Problems.Of(StatusCodes.Status413PayloadTooLarge, "File too large", e.Message);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return Problems.Of(StatusCodes.Status413PayloadTooLarge, "File too large", $"The upload is larger than the limit of {o.MaxFileBytes} bytes.");
        }

        if (purpose != "batch")
        {
            return Problems.Of(StatusCodes.Status400BadRequest, "Invalid purpose",
                $"'purpose' must be \"batch\" (got {(purpose is null ? "nothing" : $"\"{purpose}\"")}).");
        }

        if (stored is null)
        {
            return Problems.Of(StatusCodes.Status400BadRequest, "No file", "The form has no 'file' part.");
        }

        return TypedResults.Ok(BatchShapes.File(stored));
    }

    private static async Task<IResult> GetAsync(string id, FileStore files, HttpContext http, CancellationToken ct) =>
        await files.FindAsync(id, http.Tenant(), ct) is { } f
            ? TypedResults.Ok(BatchShapes.File(f))
            : Problems.Of(StatusCodes.Status404NotFound, "File not found", $"There is no file with id {id}.");

    private static async Task<IResult> ContentAsync(string id, FileStore files, HttpContext http, CancellationToken ct)
    {
        if (await files.FindAsync(id, http.Tenant(), ct) is not { } f)
        {
            return Problems.Of(StatusCodes.Status404NotFound, "File not found", $"There is no file with id {id}.");
        }

        return Results.Stream(files.OpenRead(f.Id), "application/jsonl", fileDownloadName: null);
    }

    /// <summary>Raises Kestrel's body limit for this request (uploads are larger than API calls).</summary>
    internal static void AllowBody(HttpRequest http, long bytes)
    {
        if (http.HttpContext.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = bytes;
        }
    }
}

internal static class Problems
{
    public static IResult Of(int status, string title, string detail) =>
        TypedResults.Problem(statusCode: status, title: title, detail: detail);
}
