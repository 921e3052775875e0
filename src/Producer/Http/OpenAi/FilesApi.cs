using LlmServing.ResultStore.Files;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Http.OpenAi;

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
        group.MapGet("", ListAsync).WithSummary("List files, newest first (`purpose`, `limit` 1..10000, `after`, `order`)");
        group.MapGet("/{id}", GetAsync).WithSummary("Get a file object").ProducesProblem(StatusCodes.Status404NotFound);
        group.MapDelete("/{id}", DeleteAsync)
            .WithSummary("Delete a file and its content")
            .WithDescription("409 while a batch that has not finished reads it.")
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict);
        group.MapGet("/{id}/content", ContentAsync).WithSummary("Download a file's content").ProducesProblem(StatusCodes.Status404NotFound);
        return app;
    }

    private static async Task<IResult> UploadAsync(
        HttpRequest http, FileStore files, IOptions<ProducerOptions> options, IOptions<RetentionOptions> retention, TimeProvider clock,
        CancellationToken ct)
    {
        var o = options.Value;
        if (!MediaTypeHeaderValue.TryParse(http.ContentType, out var type) || !type.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase)
            || HeaderUtilities.RemoveQuotes(type.Boundary).Value is not { Length: > 0 } boundary)
        {
            return Problems.Of(StatusCodes.Status415UnsupportedMediaType, "Unsupported content type",
                "Upload files as multipart/form-data with a 'file' part and 'purpose=batch'.");
        }

        RequestBodies.AllowBody(http, o.MaxFileBytes + (1 << 20));
        var form = new UploadForm();
        try
        {
            await form.ReadAsync(new MultipartReader(boundary, http.Body), http.HttpContext.Tenant(), files, o.MaxFileBytes, ct);
        }
        catch (FileTooLargeException e)
        {
            form.Refusal = Problems.Of(StatusCodes.Status413PayloadTooLarge, "File too large", e.Message);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            form.Refusal = Problems.Of(StatusCodes.Status413PayloadTooLarge, "File too large", $"The upload is larger than the limit of {o.MaxFileBytes} bytes.");
        }
        catch (Exception e) when (e is IOException or InvalidDataException && !ct.IsCancellationRequested)
        {
            // A truncated body, a boundary over 70 characters, part headers over 16 KiB: the client's request is bad.
            form.Refusal = Problems.Of(StatusCodes.Status400BadRequest, "Malformed multipart body", $"The multipart/form-data body cannot be read: {e.Message}");
        }

        var (expiresAfter, refusal) = form.Check();
        if (refusal is not null)
        {
            // A file part stored before the form turned out bad must not stay behind without an id anyone was given.
            if (form.Stored is not null)
            {
                await files.DeleteAsync(form.Stored.Id, CancellationToken.None);
            }

            return refusal;
        }

        var stored = form.Stored!;
        stored.ExpiresAt = expiresAfter > 0 ? stored.CreatedAt.AddSeconds(expiresAfter) : RetentionOptions.ExpiryOf(stored.CreatedAt, retention.Value.BatchFiles);
        await files.SetExpiryAsync([stored.Id], stored.ExpiresAt, ct);
        return TypedResults.Ok(BatchShapes.File(stored));
    }

    /// <summary>
    /// OpenAI's upload form as it is read: <c>purpose</c>, <c>expires_after[anchor]</c>, <c>expires_after[seconds]</c>
    /// and the <c>file</c> part, stored as it streams in (so a large file is never held whole).
    /// </summary>
    private sealed class UploadForm
    {
        private string? _purpose;
        private string? _anchor;
        private string? _seconds;

        public StoredFile? Stored { get; private set; }

        public IResult? Refusal { get; set; }

        public async Task ReadAsync(MultipartReader reader, string tenant, FileStore files, long maxBytes, CancellationToken ct)
        {
            while (Refusal is null && await reader.ReadNextSectionAsync(ct) is { } section)
            {
                if (!ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var disposition))
                {
                    continue;
                }

                switch (HeaderUtilities.RemoveQuotes(disposition.Name).Value)
                {
                    case "expires_after[anchor]":
                        _anchor = await ReadCappedAsync(section.Body, MaxPurposeChars, ct) ?? "";
                        break;
                    case "expires_after[seconds]":
                        _seconds = await ReadCappedAsync(section.Body, MaxPurposeChars, ct) ?? "";
                        break;
                    case "purpose":
                        _purpose = await ReadCappedAsync(section.Body, MaxPurposeChars, ct);
                        Refusal = _purpose != "batch" ? BadPurpose() : null;
                        break;
                    case "file" when Stored is null:
                        var filename = HeaderUtilities.RemoveQuotes(disposition.FileName.HasValue ? disposition.FileName : disposition.FileNameStar).Value ?? "upload.jsonl";
                        if (filename.Length > MaxFilenameChars || TextInput.HasNul(filename))
                        {
                            Refusal = Problems.Of(StatusCodes.Status400BadRequest, "Invalid filename",
                                $"A filename has at most {MaxFilenameChars} characters and no NUL character.");
                            return;
                        }

                        Stored = await files.CreateAsync(tenant, filename, "batch", section.Body, maxBytes, ct);
                        break;
                }
            }
        }

        /// <summary>The form's refusal, or the expiry it asks for (0: the deployment's default for batch files).</summary>
        public (long ExpiresAfter, IResult? Refusal) Check()
        {
            var expiresAfter = 0L;
            var refusal = Refusal ?? (_purpose != "batch" ? BadPurpose()
                : Stored is null ? Problems.Of(StatusCodes.Status400BadRequest, "No file", "The form has no 'file' part.")
                : (_anchor ?? _seconds) is not null && (_anchor != "created_at" || !long.TryParse(_seconds, out expiresAfter) || expiresAfter is < 3600 or > 2_592_000)
                    ? Problems.Of(StatusCodes.Status400BadRequest, "Invalid expires_after",
                        "'expires_after[anchor]' is \"created_at\" and 'expires_after[seconds]' is 3600 (1 hour) to 2592000 (30 days), as OpenAI's.")
                : null);
            return (expiresAfter, refusal);
        }
    }

    private static async Task<IResult> ListAsync(FileStore files, HttpContext http, string? purpose, int? limit, string? after, string? order, CancellationToken ct)
    {
        if (order is not (null or "asc" or "desc"))
        {
            return Problems.Of(StatusCodes.Status400BadRequest, "Invalid order", "'order' is \"asc\" or \"desc\".");
        }

        var take = Math.Clamp(limit ?? 10_000, 1, 10_000);
        var page = await files.ListAsync(http.Tenant(), purpose, after, take + 1, order == "asc", ct);
        var data = new System.Text.Json.Nodes.JsonArray([.. page.Take(take).Select(f => (System.Text.Json.Nodes.JsonNode)BatchShapes.File(f))]);
        return TypedResults.Ok(new System.Text.Json.Nodes.JsonObject
        {
            ["object"] = "list",
            ["data"] = data,
            ["first_id"] = page.FirstOrDefault()?.Id,
            ["last_id"] = page.Take(take).LastOrDefault()?.Id,
            ["has_more"] = page.Count > take,
        });
    }

    private static async Task<IResult> DeleteAsync(string id, FileStore files, HttpContext http, CancellationToken ct)
    {
        if (await files.FindAsync(id, http.Tenant(), ct) is null)
        {
            return Problems.Of(StatusCodes.Status404NotFound, "File not found", $"There is no file with id {id}.");
        }

        if (await files.InUseAsync(id, ct))
        {
            return Problems.Of(StatusCodes.Status409Conflict, "File in use", $"A batch that has not finished reads file {id}; cancel it or wait for it to end.");
        }

        await files.DeleteAsync(id, ct);
        return TypedResults.Ok(new System.Text.Json.Nodes.JsonObject { ["id"] = id, ["object"] = "file", ["deleted"] = true });
    }

    private const int MaxPurposeChars = 64;
    private const int MaxFilenameChars = 512;

    // The purpose is never echoed: it is the client's input, of any size.
    private static IResult BadPurpose() =>
        Problems.Of(StatusCodes.Status400BadRequest, "Invalid purpose", "'purpose' must be \"batch\".");

    /// <summary>Reads a form field of at most <paramref name="maxChars"/> characters; null when it is longer.</summary>
    private static async Task<string?> ReadCappedAsync(Stream body, int maxChars, CancellationToken ct)
    {
        using var reader = new StreamReader(body);
        var buffer = new char[maxChars + 1];
        var read = 0;
        int n;
        while (read < buffer.Length && (n = await reader.ReadAsync(buffer.AsMemory(read), ct)) > 0)
        {
            read += n;
        }

        return read > maxChars ? null : new string(buffer, 0, read).Trim();
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
}
