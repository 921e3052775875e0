using LlmServing.Producer;
using LlmServing.ServiceDefaults;
using LlmServing.GpuWorker;
using MassTransit;

namespace LlmServing.Monolith;

public static class MonolithExtensions
{
    /// <summary>
    /// Producer and worker in one process: each module registers its services, and this root configures the single
    /// MassTransit bus they share (the worker's receive endpoints plus the Producer's sends). Jobs still travel through
    /// RabbitMQ and PostgreSQL exactly as between separate services, so splitting later changes no behaviour.
    /// </summary>
    public static WebApplicationBuilder AddMonolith(this WebApplicationBuilder builder)
    {
        builder.AddProducer(ownBus: false);
        builder.AddGpuWorker(ownBus: false);
        builder.AddLlmServingBus(WorkerExtensions.AddWorkerConsumers, WorkerExtensions.ConfigureWorkerEndpoints);
        return builder;
    }
}
