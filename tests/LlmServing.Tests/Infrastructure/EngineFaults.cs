using LLama.Native;
using LlmServing.GpuWorker.Inference;
using Microsoft.Extensions.DependencyInjection;

namespace LlmServing.Tests.Infrastructure;

/// <summary>Fault injection around the real engine, registered by tests only (never by the worker itself).</summary>
public static class EngineFaults
{
    /// <summary>Makes every request whose text contains <paramref name="marker"/> throw in the engine: a poison job.</summary>
    public static Action<IServiceCollection> Poison(string marker) =>
        services => services.AddSingleton<IGenerator>(sp => new PoisonGenerator(sp.GetRequiredService<BatchScheduler>(), marker));

    /// <summary>Registers <paramref name="faults"/>, which fails the next decode step when asked to.</summary>
    public static Action<IServiceCollection> Decode(DecodeFaults faults) =>
        services => services.AddSingleton<IDecodeResultFilter>(faults);

    private sealed class PoisonGenerator(IGenerator inner, string marker) : IGenerator
    {
        public Task<GenerationOutcome> GenerateAsync(GenerationRequest request, CancellationToken ct) =>
            request.Prompt?.Contains(marker, StringComparison.Ordinal) == true
            || request.Messages?.Any(m => m.Content.Contains(marker, StringComparison.Ordinal)) == true
                ? Task.FromException<GenerationOutcome>(new InvalidOperationException($"Fault injection: the request contains '{marker}'."))
                : inner.GenerateAsync(request, ct);

        public bool RequestCancel(Guid jobId) => inner.RequestCancel(jobId);
    }
}

/// <summary>Turns the next decode step into a failure (as a <c>NoKvSlot</c> would be), once per <see cref="FailNext"/>.</summary>
public sealed class DecodeFaults : IDecodeResultFilter
{
    private int _failNext;

    public void FailNext() => Interlocked.Exchange(ref _failNext, 1);

    public DecodeResult Filter(DecodeResult result) => Interlocked.Exchange(ref _failNext, 0) == 1 ? DecodeResult.NoKvSlot : result;
}
