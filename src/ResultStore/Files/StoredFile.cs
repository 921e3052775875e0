using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Metadata.Builders;

namespace LlmServing.ResultStore.Files;

/// <summary>
/// An uploaded or generated file (OpenAI file object). Its bytes live in <see cref="FileChunk"/> rows, so files
/// survive restarts, are shared by every Producer replica, and are streamed in and out without being held in memory.
/// </summary>
public sealed class StoredFile
{
    /// <summary><c>file-…</c></summary>
    public string Id { get; set; } = "";
    public string TenantId { get; set; } = Jobs.Tenants.Default;
    /// <summary><c>batch</c> (uploaded input), <c>batch_output</c> (generated results and errors).</summary>
    public string Purpose { get; set; } = "batch";
    public string Filename { get; set; } = "";
    public long Bytes { get; set; }
    public DateTimeOffset CreatedAt { get; set; }

    /// <summary>When retention deletes the file (OpenAI's <c>expires_at</c>); null: kept until deleted.</summary>
    public DateTimeOffset? ExpiresAt { get; set; }
}

/// <summary>One piece of a file's content, in order of <see cref="Sequence"/>.</summary>
public sealed class FileChunk
{
    public string FileId { get; set; } = "";
    public int Sequence { get; set; }
    public byte[] Data { get; set; } = [];
}

internal sealed class StoredFileConfiguration : IEntityTypeConfiguration<StoredFile>
{
    public void Configure(EntityTypeBuilder<StoredFile> builder)
    {
        builder.ToTable("files");
        builder.HasKey(f => f.Id);
        builder.Property(f => f.Id).HasMaxLength(64);
        builder.Property(f => f.TenantId).HasMaxLength(64);
        builder.Property(f => f.Purpose).HasMaxLength(32);
        builder.Property(f => f.Filename).HasMaxLength(512);
        builder.HasIndex(f => new { f.TenantId, f.CreatedAt });
        builder.HasIndex(f => f.ExpiresAt).HasFilter("expires_at IS NOT NULL");
    }
}

internal sealed class FileChunkConfiguration : IEntityTypeConfiguration<FileChunk>
{
    public void Configure(EntityTypeBuilder<FileChunk> builder)
    {
        builder.ToTable("file_chunks");
        builder.HasKey(c => new { c.FileId, c.Sequence });
        builder.Property(c => c.FileId).HasMaxLength(64);
    }
}
