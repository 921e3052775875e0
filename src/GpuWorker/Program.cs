using LlmServing.GpuWorker;

var builder = Host.CreateApplicationBuilder(args);
builder.AddGpuWorker();
await builder.Build().RunAsync();
