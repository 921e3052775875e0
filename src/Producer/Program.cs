using LlmServing.Producer;
using LlmServing.ResultStore;

var builder = WebApplication.CreateBuilder(args);
builder.AddProducer();
var app = builder.Build();
if (args.Contains("--migrate-only"))
{
    // One-off database migration (e.g. a Kubernetes Job), instead of every replica migrating at start-up.
    await app.Services.MigrateDatabaseAsync();
    return;
}

app.MapProducer();
app.Run();
