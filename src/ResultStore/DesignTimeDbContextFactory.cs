using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Design;

namespace LlmServing.ResultStore;

/// <summary>Used by <c>dotnet ef migrations add</c> only; no database is contacted.</summary>
internal sealed class DesignTimeDbContextFactory : IDesignTimeDbContextFactory<LlmServingDbContext>
{
    public LlmServingDbContext CreateDbContext(string[] args)
    {
        var builder = new DbContextOptionsBuilder<LlmServingDbContext>();
        ResultStoreExtensions.Configure(builder, new Npgsql.NpgsqlDataSourceBuilder("Host=localhost;Database=design_time").Build());
        return new LlmServingDbContext(builder.Options);
    }
}
