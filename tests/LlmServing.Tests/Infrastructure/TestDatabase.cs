using Npgsql;

namespace LlmServing.Tests.Infrastructure;

/// <summary>Direct SQL against the run's database, for arranging states and asserting on rows.</summary>
public static class TestDatabase
{
    public static async Task<NpgsqlConnection> OpenAsync()
    {
        var connection = new NpgsqlConnection(TestServices.Postgres);
        await connection.OpenAsync();
        return connection;
    }

    public static async Task ExecAsync(this NpgsqlConnection db, string sql)
    {
        await using var command = new NpgsqlCommand(sql, db);
        await command.ExecuteNonQueryAsync();
    }

    public static async Task<long> ScalarAsync(this NpgsqlConnection db, string sql)
    {
        await using var command = new NpgsqlCommand(sql, db);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>One query on a connection of its own.</summary>
    public static async Task<long> ScalarAsync(string sql)
    {
        await using var db = await OpenAsync();
        return await db.ScalarAsync(sql);
    }
}
