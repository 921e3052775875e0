using System.Collections.Concurrent;
using System.Diagnostics;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>
/// One trace from the HTTP request that accepts a job, through the publish and the consume, to the generation and the
/// result write: the Producer and the worker run in this process, and a listener records what their activity sources
/// emit (what an OTLP exporter would send).
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class TracingTests
{
    [Test]
    public async Task ShouldFollowAJobInOneTrace_FromTheRequestThroughTheBrokerToTheResultWrite()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-trace";
        var recorded = new ConcurrentBag<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name is "Microsoft.AspNetCore" or "MassTransit" or "Npgsql" || source.Name.StartsWith("LlmServing", StringComparison.Ordinal),
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = recorded.Add,
        };
        ActivitySource.AddActivityListener(listener);
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            await using var worker = await WorkerInstance.StartAsync(queue);
            var accepted = await producer.Client.SubmitAsync(new { prompt = "Trace me", max_tokens = 5 });
            await producer.Client.WaitForFinalAsync(accepted.Id);

            var generate = await Eventually.ValueAsync(() => recorded.FirstOrDefault(a =>
                a.OperationName == "llm.generate" && (string?)a.GetTagItem("llmserving.job_id") == accepted.Id.ToString()));
            var request = recorded.FirstOrDefault(a => a.Source.Name == "Microsoft.AspNetCore" && (string?)a.GetTagItem("llmserving.job_id") == accepted.Id.ToString());
            var trace = recorded.Where(a => a.TraceId == generate.TraceId).ToList();

            Assert.That(request, Is.Not.Null, "the accepting request is traced and tagged with the job");
            Assert.That(generate.TraceId, Is.EqualTo(request!.TraceId), "the worker's span continues the request's trace");
            Assert.That(trace.Select(a => a.Source.Name).Distinct(), Is.SupersetOf(new[] { "Microsoft.AspNetCore", "MassTransit", "Npgsql", "LlmServing.GpuWorker" }));
            Assert.That(generate.Events.Select(e => e.Name), Is.EqualTo(new[] { "queued", "claimed", "admitted", "first_token", "finished" }));
            Assert.That(generate.Events.Select(e => e.Timestamp), Is.Ordered, "queue wait, admission, prefill and decode in order");
            Assert.That(generate.GetTagItem("gen_ai.usage.output_tokens"), Is.EqualTo(5));
            Assert.That(trace.Any(a => a.Source.Name == "Npgsql" && a.StartTimeUtc >= generate.StartTimeUtc + generate.Duration - TimeSpan.FromSeconds(5)
                                       && a.Parent?.OperationName != null), Is.True, "the result write is in the trace");
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }
}
