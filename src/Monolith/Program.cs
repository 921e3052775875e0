using LlmServing.Monolith;
using LlmServing.Producer;

var builder = WebApplication.CreateBuilder(args);
builder.AddMonolith();
var app = builder.Build();
app.MapProducer();
app.Run();
