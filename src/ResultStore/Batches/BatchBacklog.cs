using Npgsql;

namespace LlmServing.ResultStore.Batches;

/// <summary>A batch line released to the broker: its id (the message id) and its message.</summary>
public sealed record ReleasableLine(Guid Id, string TenantId, string Request);

/// <summary>
/// The batch backlog in PostgreSQL (ADR 0007): lines of running batches wait here, unsent (<c>queued_at</c> null),
/// until their tenant's window has room. A release holds a session advisory lock per queue, so replicas take turns and
/// never overfill a window together; a process that dies loses its connection and with it the lock.
/// </summary>
public sealed class BatchBacklog(NpgsqlDataSource data, TimeProvider clock)
{
    /// <summary>Starts a release pass for <paramref name="queue"/>, or returns null when another replica is releasing.</summary>
    public async Task<Release?> BeginAsync(string queue, CancellationToken ct)
    {
        var connection = await data.OpenConnectionAsync(ct);
        await using (var lockCommand = new NpgsqlCommand("SELECT pg_try_advisory_lock(hashtext('llmserving-release:' || $1))", connection))
        {
            lockCommand.Parameters.AddWithValue(queue);
            if (await lockCommand.ExecuteScalarAsync(ct) is not true)
            {
                await connection.DisposeAsync();
                return null;
            }
        }

        return new Release(connection, queue, clock);
    }

    /// <summary>Lines of <paramref name="queue"/>'s batches waiting in PostgreSQL (for scaling on the whole backlog).</summary>
    public async Task<long> CountAsync(string queue, CancellationToken ct)
    {
        await using var command = data.CreateCommand(
            "SELECT count(*) FROM jobs WHERE status = 'queued' AND queued_at IS NULL AND batch_id IS NOT NULL AND queue = $1");
        command.Parameters.AddWithValue(queue);
        return (long)(await command.ExecuteScalarAsync(ct))!;
    }

    /// <summary>One release pass: read windows and candidates, send, then <see cref="MarkSentAsync"/>; disposing ends it.</summary>
    public sealed class Release(NpgsqlConnection connection, string queue, TimeProvider clock) : IAsyncDisposable
    {
        /// <summary>
        /// For every tenant with a running, fully ingested batch on this queue: up to <paramref name="window"/> minus its
        /// lines already sent or running, oldest batch first, in line order.
        /// </summary>
        public async Task<List<ReleasableLine>> CandidatesAsync(int window, CancellationToken ct)
        {
            var tenants = new List<string>();
            await using (var command = new NpgsqlCommand(
                "SELECT DISTINCT tenant_id FROM batches WHERE status = 'in_progress' AND published AND job_queue = $1", connection))
            {
                command.Parameters.AddWithValue(queue);
                await using var reader = await command.ExecuteReaderAsync(ct);
                while (await reader.ReadAsync(ct))
                {
                    tenants.Add(reader.GetString(0));
                }
            }

            var lines = new List<ReleasableLine>();
            foreach (var tenant in tenants)
            {
                await using var command = new NpgsqlCommand("""
                    WITH inflight AS (
                        SELECT count(*)::int AS n FROM jobs
                        WHERE tenant_id = $1 AND batch_id IS NOT NULL AND queue = $2
                          AND (status = 'running' OR (status = 'queued' AND queued_at IS NOT NULL)))
                    SELECT j.id, j.request::text FROM jobs j
                    WHERE j.tenant_id = $1 AND j.batch_id IS NOT NULL AND j.status = 'queued' AND j.queued_at IS NULL AND j.queue = $2
                      AND EXISTS (SELECT 1 FROM batches b WHERE b.id = j.batch_id AND b.status = 'in_progress' AND b.published)
                    ORDER BY j.batch_id, j.line_number
                    LIMIT GREATEST(0, $3 - (SELECT n FROM inflight))
                    """, connection);
                command.Parameters.AddWithValue(tenant);
                command.Parameters.AddWithValue(queue);
                command.Parameters.AddWithValue(window);
                await using var reader = await command.ExecuteReaderAsync(ct);
                while (await reader.ReadAsync(ct))
                {
                    lines.Add(new ReleasableLine(reader.GetGuid(0), tenant, reader.GetString(1)));
                }
            }

            return lines;
        }

        /// <summary>Records the broker's confirms for released lines (a slice at a time: a crash re-sends only the unmarked rest).</summary>
        public async Task MarkSentAsync(IReadOnlyCollection<Guid> ids, CancellationToken ct)
        {
            // Rows locked in id order, as every multi-row update of jobs does (no deadlock with the workers' group claims).
            await using var command = new NpgsqlCommand($"""
                UPDATE jobs AS j SET queued_at = $2
                FROM ({Jobs.JobStore.LockInIdOrder("queued_at IS NULL")}) AS l
                WHERE j.id = l.id
                """, connection);
            command.Parameters.AddWithValue(ids.ToArray());
            command.Parameters.AddWithValue(clock.GetUtcNow());
            await command.ExecuteNonQueryAsync(ct);
        }

        public async ValueTask DisposeAsync()
        {
            try
            {
                await using var unlock = new NpgsqlCommand("SELECT pg_advisory_unlock(hashtext('llmserving-release:' || $1))", connection);
                unlock.Parameters.AddWithValue(queue);
                await unlock.ExecuteScalarAsync();
            }
            catch (NpgsqlException)
            {
                // The connection is broken: closing it below releases the lock anyway.
            }

            await connection.DisposeAsync();
        }
    }
}
