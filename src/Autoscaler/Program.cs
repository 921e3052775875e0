using LlmServing.Autoscaler;

var builder = Host.CreateApplicationBuilder(args);
builder.AddAutoscaler();
await builder.Build().RunAsync();
