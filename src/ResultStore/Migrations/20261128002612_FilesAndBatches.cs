using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace LlmServing.ResultStore.Migrations
{
    /// <inheritdoc />
    public partial class FilesAndBatches : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<string>(
                name: "batch_id",
                table: "jobs",
                type: "character varying(64)",
                maxLength: 64,
                nullable: true);

            migrationBuilder.AddColumn<string>(
                name: "custom_id",
                table: "jobs",
                type: "character varying(512)",
                maxLength: 512,
                nullable: true);

            migrationBuilder.AddColumn<int>(
                name: "line_number",
                table: "jobs",
                type: "integer",
                nullable: true);

            migrationBuilder.CreateTable(
                name: "batches",
                columns: table => new
                {
                    id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    tenant_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    endpoint = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    input_file_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    completion_window = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: false),
                    status = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: false),
                    metadata = table.Column<string>(type: "jsonb", nullable: true),
                    errors = table.Column<string>(type: "jsonb", nullable: true),
                    job_queue = table.Column<string>(type: "character varying(255)", maxLength: 255, nullable: false),
                    output_file_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: true),
                    error_file_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: true),
                    ingested_lines = table.Column<int>(type: "integer", nullable: false),
                    ingested_bytes = table.Column<long>(type: "bigint", nullable: false),
                    total_lines = table.Column<int>(type: "integer", nullable: true),
                    created_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false),
                    expires_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false),
                    in_progress_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true),
                    finalizing_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true),
                    completed_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true),
                    failed_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true),
                    expired_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true),
                    cancelling_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true),
                    cancelled_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true),
                    published = table.Column<bool>(type: "boolean", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_batches", x => x.id);
                });

            migrationBuilder.CreateTable(
                name: "file_chunks",
                columns: table => new
                {
                    file_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    sequence = table.Column<int>(type: "integer", nullable: false),
                    data = table.Column<byte[]>(type: "bytea", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_file_chunks", x => new { x.file_id, x.sequence });
                });

            migrationBuilder.CreateTable(
                name: "files",
                columns: table => new
                {
                    id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    tenant_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    purpose = table.Column<string>(type: "character varying(32)", maxLength: 32, nullable: false),
                    filename = table.Column<string>(type: "character varying(512)", maxLength: 512, nullable: false),
                    bytes = table.Column<long>(type: "bigint", nullable: false),
                    created_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_files", x => x.id);
                });

            migrationBuilder.CreateIndex(
                name: "ix_jobs_batch_id_line_number",
                table: "jobs",
                columns: new[] { "batch_id", "line_number" },
                filter: "batch_id IS NOT NULL");

            migrationBuilder.CreateIndex(
                name: "ix_batches_status",
                table: "batches",
                column: "status");

            migrationBuilder.CreateIndex(
                name: "ix_batches_tenant_id_created_at",
                table: "batches",
                columns: new[] { "tenant_id", "created_at" });

            migrationBuilder.CreateIndex(
                name: "ix_files_tenant_id_created_at",
                table: "files",
                columns: new[] { "tenant_id", "created_at" });
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropTable(
                name: "batches");

            migrationBuilder.DropTable(
                name: "file_chunks");

            migrationBuilder.DropTable(
                name: "files");

            migrationBuilder.DropIndex(
                name: "ix_jobs_batch_id_line_number",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "batch_id",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "custom_id",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "line_number",
                table: "jobs");
        }
    }
}
