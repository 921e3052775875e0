namespace LlmServing.GpuWorker.Inference;

/// <summary>What to do with the request at the head of the admission queue.</summary>
public enum Admission
{
    /// <summary>Start it now.</summary>
    Admit,

    /// <summary>Leave it at the head until a running sequence frees KV cells.</summary>
    Wait,

    /// <summary>It can never fit this worker's context: fail it.</summary>
    Reject,
}

/// <summary>
/// The KV budget: a sequence reserves its prompt plus its <c>max_tokens</c>, and a request is admitted only while the
/// reservations of all active sequences fit the context, so a decode step never runs out of KV cells in normal
/// operation. Pure: no engine, unit tested case by case.
/// </summary>
public static class AdmissionPolicy
{
    public static Admission Decide(int promptTokens, int maxTokens, int reservedTokens, int activeSequences, int contextSize)
    {
        var need = promptTokens + maxTokens;
        if (need > contextSize)
        {
            return Admission.Reject;
        }

        // An empty context always takes a request that fits on its own.
        return reservedTokens + need > contextSize && activeSequences > 0 ? Admission.Wait : Admission.Admit;
    }
}
