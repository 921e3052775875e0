using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace LlmServing.ServiceDefaults;

/// <summary>The one MassTransit-on-RabbitMQ set-up every host uses (<c>ConnectionStrings:RabbitMq</c>), with its consumers and endpoints.</summary>
public static class BusDefaults
{
    /// <summary>The broker's address; a clear error when it is not configured.</summary>
    public static Uri RabbitMqAddress(IConfiguration configuration) =>
        new(configuration.GetConnectionString("RabbitMq")
            ?? throw new OptionsValidationException("ConnectionStrings:RabbitMq", typeof(string),
                ["ConnectionStrings:RabbitMq is not set (environment variable ConnectionStrings__RabbitMq)."]));

    public static IHostApplicationBuilder AddLlmServingBus(
        this IHostApplicationBuilder builder,
        Action<IBusRegistrationConfigurator>? consumers = null,
        Action<IBusRegistrationContext, IRabbitMqBusFactoryConfigurator>? endpoints = null)
    {
        var address = RabbitMqAddress(builder.Configuration);
        builder.Services.AddMassTransit(x =>
        {
            x.DisableUsageTelemetry(); // no calls out of the deployment
            consumers?.Invoke(x);
            x.UsingRabbitMq((context, cfg) =>
            {
                cfg.Host(address);
                endpoints?.Invoke(context, cfg);
            });
        });
        return builder;
    }
}
