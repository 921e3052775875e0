using System.Security.Cryptography;
using System.Text;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Metadata.Builders;

namespace LlmServing.ResultStore.Tenants;

/// <summary>An API key of a tenant. Only its SHA-256 is stored; the key itself is shown once, when created.</summary>
public sealed class ApiKey
{
    public Guid Id { get; set; }
    public string TenantId { get; set; } = "";
    public string KeyHash { get; set; } = "";
    /// <summary>The first characters of the key, to recognise it in listings.</summary>
    public string Prefix { get; set; } = "";
    public DateTimeOffset CreatedAt { get; set; }
    public DateTimeOffset? RevokedAt { get; set; }
}

internal sealed class ApiKeyConfiguration : IEntityTypeConfiguration<ApiKey>
{
    public void Configure(EntityTypeBuilder<ApiKey> builder)
    {
        builder.ToTable("api_keys");
        builder.HasKey(k => k.Id);
        builder.Property(k => k.TenantId).HasMaxLength(64);
        builder.Property(k => k.KeyHash).HasMaxLength(64);
        builder.Property(k => k.Prefix).HasMaxLength(16);
        builder.HasIndex(k => k.KeyHash).IsUnique();
    }
}

/// <summary>Creates, checks and revokes API keys.</summary>
public sealed class ApiKeyStore(IDbContextFactory<LlmServingDbContext> contexts, TimeProvider clock)
{
    public static string Hash(string key) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key))).ToLowerInvariant();

    /// <summary>Creates a key for <paramref name="tenantId"/>; the returned key is not stored anywhere.</summary>
    public async Task<(ApiKey Record, string Key)> CreateAsync(string tenantId, CancellationToken ct)
    {
        var key = "lls_" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        var record = new ApiKey
        {
            Id = Guid.CreateVersion7(), TenantId = tenantId, KeyHash = Hash(key), Prefix = key[..12], CreatedAt = clock.GetUtcNow(),
        };
        await using var db = await contexts.CreateDbContextAsync(ct);
        db.Set<ApiKey>().Add(record);
        await db.SaveChangesAsync(ct);
        return (record, key);
    }

    /// <summary>The tenant of a valid, unrevoked key; null otherwise.</summary>
    public async Task<string?> FindTenantAsync(string key, CancellationToken ct)
    {
        var hash = Hash(key);
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Set<ApiKey>().Where(k => k.KeyHash == hash && k.RevokedAt == null).Select(k => k.TenantId).SingleOrDefaultAsync(ct);
    }

    /// <summary>The record of a valid, unrevoked key; null otherwise.</summary>
    public async Task<ApiKey?> FindActiveAsync(string key, CancellationToken ct)
    {
        var hash = Hash(key);
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Set<ApiKey>().AsNoTracking().SingleOrDefaultAsync(k => k.KeyHash == hash && k.RevokedAt == null, ct);
    }

    /// <summary>The record of key <paramref name="id"/> while it is not revoked; null otherwise.</summary>
    public async Task<ApiKey?> FindActiveAsync(Guid id, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Set<ApiKey>().AsNoTracking().SingleOrDefaultAsync(k => k.Id == id && k.RevokedAt == null, ct);
    }

    /// <summary>Every key, newest first (revoked ones too), for the operator's console.</summary>
    public async Task<List<ApiKey>> ListAsync(CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Set<ApiKey>().AsNoTracking().OrderByDescending(k => k.CreatedAt).ToListAsync(ct);
    }

    /// <summary>The hashes of every unrevoked key: one read, for the key guard's in-memory snapshot.</summary>
    public async Task<HashSet<string>> ActiveHashesAsync(CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        var hashes = await db.Set<ApiKey>().Where(k => k.RevokedAt == null).Select(k => k.KeyHash).ToListAsync(ct);
        return hashes.ToHashSet(StringComparer.Ordinal);
    }

    public async Task<bool> RevokeAsync(Guid id, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Set<ApiKey>().Where(k => k.Id == id && k.RevokedAt == null)
            .ExecuteUpdateAsync(s => s.SetProperty(k => k.RevokedAt, now), ct) == 1;
    }
}
