using LlmServing.Producer;
using LlmServing.Monolith;

var builder = WebApplication.CreateBuilder(args);
builder.AddMonolith();
var app = builder.Build();
app.MapProducer();
app.Run();
