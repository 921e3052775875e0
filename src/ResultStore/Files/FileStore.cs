using Microsoft.EntityFrameworkCore;
using Npgsql;
using NpgsqlTypes;

namespace LlmServing.ResultStore.Files;

/// <summary>The upload was larger than allowed; nothing of it was kept.</summary>
public sealed class FileTooLargeException(long limit) : Exception($"The file is larger than the limit of {limit} bytes.")
{
    public long Limit { get; } = limit;
}

/// <summary>
/// Files in PostgreSQL, in 1 MiB chunks: streamed in while they are uploaded or generated and streamed out on read,
/// never held whole in memory; durable and visible to every Producer replica.
/// </summary>
public sealed class FileStore(NpgsqlDataSource data, IDbContextFactory<LlmServingDbContext> contexts, TimeProvider clock)
{
    public const int ChunkSize = 1 << 20;

    public static string NewId() => $"file-{Guid.CreateVersion7():N}";

    /// <summary>Stores <paramref name="content"/> as a new file. Throws <see cref="FileTooLargeException"/> past <paramref name="maxBytes"/>.</summary>
    public async Task<StoredFile> CreateAsync(string tenantId, string filename, string purpose, Stream content, long maxBytes, CancellationToken ct)
    {
        await using var writer = await OpenWriterAsync(tenantId, filename, purpose, maxBytes, ct);
        var buffer = new byte[64 * 1024];
        int read;
        while ((read = await content.ReadAsync(buffer, ct)) > 0)
        {
            await writer.WriteAsync(buffer.AsMemory(0, read), ct);
        }

        return await writer.CompleteAsync(ct);
    }

    /// <summary>Starts a file written piece by piece; it becomes visible only on <see cref="FileWriter.CompleteAsync"/>.</summary>
    public Task<FileWriter> OpenWriterAsync(string tenantId, string filename, string purpose, long maxBytes, CancellationToken ct) =>
        Task.FromResult(new FileWriter(this, data, new StoredFile
        {
            Id = NewId(), TenantId = tenantId, Filename = filename, Purpose = purpose,
        }, maxBytes));

    public async Task<StoredFile?> FindAsync(string id, string tenantId, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Files.AsNoTracking().SingleOrDefaultAsync(f => f.Id == id && f.TenantId == tenantId, ct);
    }

    /// <summary>Reads a file's content chunk by chunk, from byte <paramref name="offset"/> on.</summary>
    public Stream OpenRead(string id, long offset = 0) => new ChunkReadStream(data, id, offset);

    internal async Task<StoredFile> CommitAsync(StoredFile file, CancellationToken ct)
    {
        file.CreatedAt = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        db.Files.Add(file);
        await db.SaveChangesAsync(ct);
        return file;
    }

    /// <summary>Sets when files expire (retention deletes them then); null ids are skipped.</summary>
    public async Task SetExpiryAsync(IEnumerable<string?> ids, DateTimeOffset? at, CancellationToken ct)
    {
        var list = ids.OfType<string>().ToArray();
        if (list.Length == 0)
        {
            return;
        }

        await using var command = data.CreateCommand("UPDATE files SET expires_at = $2 WHERE id = ANY($1)");
        command.Parameters.AddWithValue(list);
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)at ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.TimestampTz });
        await command.ExecuteNonQueryAsync(ct);
    }

    /// <summary>A tenant's files, newest first, after the cursor <paramref name="after"/> (a file id), optionally of one purpose.</summary>
    public async Task<List<StoredFile>> ListAsync(string tenantId, string? purpose, string? after, int limit, bool ascending, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        var query = db.Files.AsNoTracking().Where(f => f.TenantId == tenantId);
        if (purpose is not null)
        {
            query = query.Where(f => f.Purpose == purpose);
        }

        if (after is not null)
        {
            // Ids are time-ordered (UUIDv7).
            query = ascending ? query.Where(f => string.Compare(f.Id, after) > 0) : query.Where(f => string.Compare(f.Id, after) < 0);
        }

        query = ascending ? query.OrderBy(f => f.Id) : query.OrderByDescending(f => f.Id);
        return await query.Take(limit).ToListAsync(ct);
    }

    /// <summary>Whether a batch that has not finished reads this file.</summary>
    public async Task<bool> InUseAsync(string id, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        string[] final = [Batches.BatchStatuses.Completed, Batches.BatchStatuses.Failed, Batches.BatchStatuses.Cancelled, Batches.BatchStatuses.Expired];
        return await db.Batches.AnyAsync(b => b.InputFileId == id && !final.Contains(b.Status), ct);
    }

    /// <summary>Deletes a file and its content (one transaction). False when there was no such file.</summary>
    public async Task<bool> DeleteAsync(string id, CancellationToken ct)
    {
        await using var connection = await data.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        await using (var chunks = new NpgsqlCommand("DELETE FROM file_chunks WHERE file_id = $1", connection, transaction))
        {
            chunks.Parameters.AddWithValue(id);
            await chunks.ExecuteNonQueryAsync(ct);
        }

        int deleted;
        await using (var file = new NpgsqlCommand("DELETE FROM files WHERE id = $1", connection, transaction))
        {
            file.Parameters.AddWithValue(id);
            deleted = await file.ExecuteNonQueryAsync(ct);
        }

        await transaction.CommitAsync(ct);
        return deleted == 1;
    }

    internal async Task DeleteChunksAsync(string id)
    {
        await using var command = data.CreateCommand("DELETE FROM file_chunks WHERE file_id = $1");
        command.Parameters.AddWithValue(id);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>Writes a file's content in chunks as it comes.</summary>
    public sealed class FileWriter : IAsyncDisposable
    {
        private readonly FileStore _store;
        private readonly NpgsqlDataSource _data;
        private readonly StoredFile _file;
        private readonly long _maxBytes;
        private readonly byte[] _chunk = new byte[ChunkSize];
        private int _filled;
        private int _sequence;
        private bool _completed;

        internal FileWriter(FileStore store, NpgsqlDataSource data, StoredFile file, long maxBytes)
        {
            _store = store;
            _data = data;
            _file = file;
            _maxBytes = maxBytes;
        }

        public string Id => _file.Id;

        public long Bytes => _file.Bytes;

        public async Task WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct)
        {
            if (_file.Bytes + bytes.Length > _maxBytes)
            {
                throw new FileTooLargeException(_maxBytes);
            }

            _file.Bytes += bytes.Length;
            while (bytes.Length > 0)
            {
                var n = Math.Min(bytes.Length, ChunkSize - _filled);
                bytes.Span[..n].CopyTo(_chunk.AsSpan(_filled));
                _filled += n;
                bytes = bytes[n..];
                if (_filled == ChunkSize)
                {
                    await FlushAsync(ct);
                }
            }
        }

        public async Task<StoredFile> CompleteAsync(CancellationToken ct)
        {
            await FlushAsync(ct);
            var file = await _store.CommitAsync(_file, ct);
            _completed = true; // only now: a failed commit leaves chunks that DisposeAsync must remove
            return file;
        }

        public async ValueTask DisposeAsync()
        {
            if (!_completed)
            {
                await _store.DeleteChunksAsync(_file.Id);
            }
        }

        private async Task FlushAsync(CancellationToken ct)
        {
            if (_filled == 0)
            {
                return;
            }

            await using var command = _data.CreateCommand("INSERT INTO file_chunks (file_id, sequence, data) VALUES ($1, $2, $3)");
            command.Parameters.AddWithValue(_file.Id);
            command.Parameters.AddWithValue(_sequence++);
            command.Parameters.Add(new NpgsqlParameter { Value = new ReadOnlyMemory<byte>(_chunk, 0, _filled), NpgsqlDbType = NpgsqlDbType.Bytea });
            await command.ExecuteNonQueryAsync(ct);
            _filled = 0;
        }
    }

    private sealed class ChunkReadStream(NpgsqlDataSource data, string id, long start) : Stream
    {
        // Every chunk but the last is exactly ChunkSize bytes, so a byte offset names a chunk and a place in it.
        private byte[] _chunk = [];
        private int _offset;
        private int _sequence = (int)(start / ChunkSize);
        private int _skip = (int)(start % ChunkSize);
        private bool _end;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_offset == _chunk.Length && !_end)
            {
                await using var command = data.CreateCommand("SELECT data FROM file_chunks WHERE file_id = $1 AND sequence = $2");
                command.Parameters.AddWithValue(id);
                command.Parameters.AddWithValue(_sequence++);
                var next = (byte[]?)await command.ExecuteScalarAsync(cancellationToken);
                _end = next is null;
                _chunk = next ?? [];
                _offset = Math.Min(_skip, _chunk.Length);
                _skip = 0;
            }

            var n = Math.Min(buffer.Length, _chunk.Length - _offset);
            _chunk.AsMemory(_offset, n).CopyTo(buffer);
            _offset += n;
            return n;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
