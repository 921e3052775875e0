using LlmServing.ModelGen;
using Npgsql;
using Testcontainers.PostgreSql;
using Testcontainers.RabbitMq;

namespace LlmServing.Tests;

/// <summary>
/// Finds the real services every test runs against, once per run: PostgreSQL and RabbitMQ from
/// <c>ConnectionStrings__Postgres</c> / <c>ConnectionStrings__RabbitMq</c> when set, else Testcontainers when a Docker
/// engine answers, else a clear failure. Each run gets its own database, dropped at the end, and the generated model.
/// </summary>
[SetUpFixture]
public sealed class TestServices
{
    private static PostgreSqlContainer? _postgresContainer;
    private static RabbitMqContainer? _rabbitContainer;
    private static string? _serverConnectionString;
    private static string? _databaseName;

    public static string Postgres { get; private set; } = "";

    public static string RabbitMq { get; private set; } = "";

    /// <summary>The generated tiny llama model (GGUF), written once per run.</summary>
    public static string ModelPath { get; private set; } = "";

    public static string RunId { get; } = Guid.NewGuid().ToString("N")[..8];

    /// <summary>
    /// The trained TinyStories 260K model (real English), never committed: <c>LLMSERVING_STORIES_MODEL</c>, else
    /// <c>../shared/models/stories260K.gguf</c> beside the checkout. Tests that assert real text fail without it.
    /// </summary>
    public static string StoriesModelPath
    {
        get
        {
            var path = Environment.GetEnvironmentVariable("LLMSERVING_STORIES_MODEL") is { Length: > 0 } configured
                ? configured
                : Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory, "../../../../../../shared/models/stories260K.gguf"));
            Assert.That(File.Exists(path), Is.True, $"the trained model is missing: {path} (set LLMSERVING_STORIES_MODEL)");
            return path;
        }
    }

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        var postgres = Environment.GetEnvironmentVariable("ConnectionStrings__Postgres");
        var rabbit = Environment.GetEnvironmentVariable("ConnectionStrings__RabbitMq");
        if (string.IsNullOrWhiteSpace(postgres) || string.IsNullOrWhiteSpace(rabbit))
        {
            if (!DockerAvailable())
            {
                Assert.Fail("No PostgreSQL and RabbitMQ for the tests: set ConnectionStrings__Postgres and " +
                            "ConnectionStrings__RabbitMq, start a Docker engine, or run scripts/services.sh " +
                            "(scripts/test.sh does all of this).");
            }

            _postgresContainer = new PostgreSqlBuilder("postgres:15").Build();
            _rabbitContainer = new RabbitMqBuilder("rabbitmq:3.13-management").Build();
            await Task.WhenAll(_postgresContainer.StartAsync(), _rabbitContainer.StartAsync());
            postgres = _postgresContainer.GetConnectionString();
            rabbit = _rabbitContainer.GetConnectionString();
        }

        _serverConnectionString = postgres;
        _databaseName = $"llmserving_test_{RunId}";
        await using (var connection = new NpgsqlConnection(postgres))
        {
            await connection.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE DATABASE \"{_databaseName}\"", connection);
            await create.ExecuteNonQueryAsync();
        }

        Postgres = new NpgsqlConnectionStringBuilder(postgres) { Database = _databaseName }.ConnectionString;
        RabbitMq = rabbit!;

        var directory = Path.Combine(Path.GetTempPath(), "llmserving-tests");
        ModelPath = RandomLlamaModel.EnsureExists(Path.Combine(directory, "random-tiny-v1.gguf"), ModelShape.Tiny);
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        if (_serverConnectionString is not null && _databaseName is not null)
        {
            NpgsqlConnection.ClearAllPools();
            await using var connection = new NpgsqlConnection(_serverConnectionString);
            await connection.OpenAsync();
            await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS \"{_databaseName}\" WITH (FORCE)", connection);
            await drop.ExecuteNonQueryAsync();
        }

        if (_postgresContainer is not null)
        {
            await _postgresContainer.DisposeAsync();
        }

        if (_rabbitContainer is not null)
        {
            await _rabbitContainer.DisposeAsync();
        }
    }

    private static bool DockerAvailable() =>
        File.Exists("/var/run/docker.sock") || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOCKER_HOST"));
}
