using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>
/// Structured output for real: random-weight llama.cpp sampling under the grammar of a JSON schema, every result
/// checked against the schema with a JSON Schema validator (JsonSchema.Net). Random weights are the hard case: nothing
/// but the grammar keeps the output in shape.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class StructuredOutputTests
{
    private const string Schema = """
        {
          "type": "object",
          "additionalProperties": false,
          "properties": {
            "category": {"enum": ["billing", "bug", "feature"]},
            "priority": {"type": "integer"},
            "score": {"type": "number"},
            "urgent": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
            "customer": {
              "type": "object",
              "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 20},
                "tier": {"anyOf": [{"const": "gold"}, {"const": "silver"}, {"type": "null"}]}
              },
              "required": ["name", "tier"]
            },
            "note": {"$ref": "#/$defs/note"}
          },
          "required": ["category", "priority", "urgent", "tags", "customer"],
          "$defs": {"note": {"type": ["string", "null"], "maxLength": 16}}
        }
        """;

    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-structured";
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?>
        {
            ["Producer:ContextSize"] = "4096",
            ["Producer:FinalizeInterval"] = "00:00:00.200",
        });
        _worker = await WorkerInstance.StartAsync(_queue, new Dictionary<string, string?> { ["Inference:Slots"] = "16" });
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
    }

    private static object SchemaFormat => new
    {
        type = "json_schema",
        json_schema = new { name = "ticket", strict = true, schema = JsonNode.Parse(Schema) },
    };

    [Test]
    public async Task ShouldReturnJsonValidAgainstTheSchema_WhenTwoHundredJobsSampleFreelyUnderIt()
    {
        var accepted = await Task.WhenAll(Enumerable.Range(0, 200).Select(i => _producer.Client.SubmitAsync(new
        {
            prompt = $"Ticket {i}: my invoice is wrong",
            max_tokens = 600,
            temperature = 1.0,
            seed = (uint)i,
            response_format = SchemaFormat,
        })));
        var done = await Task.WhenAll(accepted.Select(a => _producer.Client.WaitForFinalAsync(a.Id, TimeSpan.FromMinutes(4))));

        var schema = JsonSchema.FromText(Schema);
        var invalid = new List<string>();
        foreach (var job in done)
        {
            Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded), job.Error);
            if (job.FinishReason != "stop" || !IsValid(schema, job.OutputText!))
            {
                invalid.Add($"{job.FinishReason}: {job.OutputText}");
            }
        }

        Assert.That(invalid, Is.Empty, $"{invalid.Count} of 200 outputs do not validate");
        Assert.That(done.Select(j => j.OutputText).Distinct().Count(), Is.GreaterThan(150), "sampled freely, not one answer");
    }

    [Test]
    public async Task ShouldGenerateAnySubsetInDeclaredOrder_WhenNoPropertyIsRequired()
    {
        // No required member: the grammar is a chain of tail rules (linear in the members), and every subset of the
        // members, in their declared order, must still be reachable.
        string[] names = ["a", "b", "c", "d", "e"];
        var schema = new JsonObject
        {
            ["type"] = "object",
            ["additionalProperties"] = false,
            ["properties"] = new JsonObject(names.Select(n => KeyValuePair.Create(n, (JsonNode?)new JsonObject { ["type"] = "boolean" }))),
        };
        var accepted = await Task.WhenAll(Enumerable.Range(0, 60).Select(i => _producer.Client.SubmitAsync(new
        {
            prompt = $"Flags {i}:",
            max_tokens = 200,
            temperature = 1.0,
            seed = (uint)i,
            response_format = new { type = "json_schema", json_schema = new { name = "flags", strict = true, schema } },
        })));
        var done = await Task.WhenAll(accepted.Select(a => _producer.Client.WaitForFinalAsync(a.Id, TimeSpan.FromMinutes(4))));

        var subsets = new HashSet<string>();
        Assert.Multiple(() =>
        {
            foreach (var job in done)
            {
                Assert.That(job.FinishReason, Is.EqualTo("stop"), job.OutputText);
                var keys = JsonNode.Parse(job.OutputText!)!.AsObject().Select(p => p.Key).ToList();
                Assert.That(keys, Is.EqualTo(names.Where(keys.Contains).ToList()), $"declared order, no duplicates: {job.OutputText}");
                subsets.Add(string.Join(",", keys));
            }
        });
        Assert.That(subsets.Count, Is.GreaterThan(3), $"sampled freely over the subsets: {string.Join(" | ", subsets)}");
        Assert.That(subsets.Any(k => k.Length > 0 && !k.StartsWith('a')), Is.True, "an object may start at a later member");
    }

    [Test]
    public async Task ShouldWriteValidValues_WhenStringsHaveTheFormatsPydanticEmits()
    {
        // datetime, date, time, timedelta, UUID, EmailStr, AnyUrl, IPv4Address, IPv6Address and a hostname, as Pydantic
        // writes them (format); they were refused with 422. Checked with format validation required.
        string[] formats = ["date-time", "date", "time", "duration", "uuid", "email", "uri", "ipv4", "ipv6", "hostname"];
        var properties = new JsonObject();
        foreach (var format in formats)
        {
            properties[format.Replace('-', '_')] = new JsonObject { ["type"] = "string", ["format"] = format };
        }

        properties["maybe_email"] = JsonNode.Parse("""{"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]}""");
        // conint(ge=0, le=120) and conint(gt=-5, lt=5000): exact digit ranges.
        properties["age"] = JsonNode.Parse("""{"type": "integer", "minimum": 0, "maximum": 120}""");
        properties["count"] = JsonNode.Parse("""{"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": 5000}""");
        var schemaNode = new JsonObject
        {
            ["type"] = "object",
            ["properties"] = properties,
            ["required"] = new JsonArray(properties.Select(p => (JsonNode?)JsonValue.Create(p.Key)).ToArray()),
        };
        var accepted = await Task.WhenAll(Enumerable.Range(0, 40).Select(i => _producer.Client.SubmitAsync(new
        {
            prompt = $"Record {i}:",
            max_tokens = 2000,
            temperature = 1.0,
            seed = (uint)i,
            response_format = new { type = "json_schema", json_schema = new { name = "record", strict = true, schema = schemaNode } },
        })));
        var done = await Task.WhenAll(accepted.Select(a => _producer.Client.WaitForFinalAsync(a.Id, TimeSpan.FromMinutes(4))));

        var schema = JsonSchema.FromText(schemaNode.ToJsonString());
        var strict = new EvaluationOptions { RequireFormatValidation = true, OutputFormat = OutputFormat.List };
        foreach (var format in formats)
        {
            // The check can fail: a record whose only wrong value is this format's is refused.
            var wrong = new JsonObject(properties.Select(p => KeyValuePair.Create(p.Key, ValidSample(p.Key))));
            wrong[format.Replace('-', '_')] = "not-a-" + format + " ::";
            Assert.That(schema.Evaluate(JsonDocument.Parse(wrong.ToJsonString()).RootElement, strict).IsValid, Is.False, format);
        }

        Assert.Multiple(() =>
        {
            foreach (var job in done)
            {
                Assert.That(job.FinishReason, Is.EqualTo("stop"), job.OutputText);
                var result = schema.Evaluate(JsonDocument.Parse(job.OutputText!).RootElement, strict);
                Assert.That(result.IsValid, Is.True, $"{job.OutputText}\n{string.Join("; ", result.Details?.Where(d => d.Errors is not null).SelectMany(d => d.Errors!.Select(e => $"{d.InstanceLocation}: {e.Value}")) ?? [])}");
            }
        });
        Assert.That(done.Select(j => j.OutputText).Distinct().Count(), Is.GreaterThan(30), "sampled freely");
        var ages = done.Select(j => JsonNode.Parse(j.OutputText!)!["age"]!.GetValue<long>()).ToList();
        Assert.That(ages, Is.All.InRange(0, 120));
        Assert.That(ages.Distinct().Count(), Is.GreaterThan(5), "the range is sampled, not one value");
    }

    private static JsonNode? ValidSample(string property) => property switch
    {
        "age" => 30,
        "count" => 4999,
        "date_time" => "2024-05-06T07:08:09Z",
        "date" => "2024-05-06",
        "time" => "07:08:09Z",
        "duration" => "P3D",
        "uuid" => "123e4567-e89b-12d3-a456-426614174000",
        "email" or "maybe_email" => "ann@example.com",
        "uri" => "https://example.com/a",
        "ipv4" => "10.0.0.1",
        "ipv6" => "2001:db8:0:0:0:0:0:1",
        _ => "example.com",
    };

    [Test]
    public async Task ShouldReturnAJsonObject_WhenJsonObjectIsAsked()
    {
        var accepted = await Task.WhenAll(Enumerable.Range(0, 50).Select(i => _producer.Client.SubmitAsync(new
        {
            messages = new[] { new { role = "user", content = $"Describe order {i} as JSON." } },
            max_tokens = 1500,
            temperature = 1.0,
            seed = (uint)i,
            response_format = new { type = "json_object" },
        })));
        var done = await Task.WhenAll(accepted.Select(a => _producer.Client.WaitForFinalAsync(a.Id, TimeSpan.FromMinutes(4))));

        Assert.Multiple(() =>
        {
            foreach (var job in done)
            {
                Assert.That(job.FinishReason, Is.EqualTo("stop"), job.OutputText);
                Assert.That(JsonNode.Parse(job.OutputText!), Is.InstanceOf<JsonObject>(), job.OutputText);
            }
        });
    }

    [Test]
    public async Task ShouldValidateEveryLine_WhenABatchFileAsksForTheSchema()
    {
        var lines = Enumerable.Range(0, 20).Select(i => JsonSerializer.Serialize(new
        {
            custom_id = $"t{i}",
            method = "POST",
            url = "/v1/chat/completions",
            body = new
            {
                messages = new[] { new { role = "user", content = $"Classify ticket {i}" } },
                max_tokens = 600,
                seed = (uint)i,
                response_format = SchemaFormat,
            },
        }));
        var batch = await _producer.Client.CreateBatchAsync(await _producer.Client.UploadAsync(string.Join("\n", lines)));
        var done = await _producer.Client.WaitForBatchAsync(batch.Str("id")!, TimeSpan.FromMinutes(3), "completed", "failed");

        var output = await _producer.Client.DownloadLinesAsync(done.Str("output_file_id"));
        var schema = JsonSchema.FromText(Schema);
        Assert.That(output, Has.Count.EqualTo(20));
        Assert.That(output.Select(o => o["response"]!["body"]!["choices"]![0]!["message"]!.Str("content")!),
            Has.All.Matches<string?>(content => content is not null && IsValid(schema, content)));
    }

    private static bool IsValid(JsonSchema schema, string text)
    {
        try
        {
            return schema.Evaluate(JsonDocument.Parse(text).RootElement).IsValid;
        }
        catch (JsonException)
        {
            return false;
        }
    }
}
