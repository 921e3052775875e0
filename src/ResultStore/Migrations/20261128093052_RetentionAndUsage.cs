using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace LlmServing.ResultStore.Migrations
{
    /// <inheritdoc />
    public partial class RetentionAndUsage : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<DateTimeOffset>(
                name: "expires_at",
                table: "files",
                type: "timestamp with time zone",
                nullable: true);

            migrationBuilder.AddColumn<int>(
                name: "output_expires_after_seconds",
                table: "batches",
                type: "integer",
                nullable: true);

            migrationBuilder.CreateTable(
                name: "tenant_settings",
                columns: table => new
                {
                    tenant_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    job_retention_seconds = table.Column<int>(type: "integer", nullable: true),
                    max_enqueued_tokens = table.Column<long>(type: "bigint", nullable: true),
                    updated_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_tenant_settings", x => x.tenant_id);
                });

            migrationBuilder.CreateTable(
                name: "usage_daily",
                columns: table => new
                {
                    tenant_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    day = table.Column<DateOnly>(type: "date", nullable: false),
                    jobs = table.Column<long>(type: "bigint", nullable: false),
                    prompt_tokens = table.Column<long>(type: "bigint", nullable: false),
                    completion_tokens = table.Column<long>(type: "bigint", nullable: false),
                    cached_tokens = table.Column<long>(type: "bigint", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_usage_daily", x => new { x.tenant_id, x.day });
                });

            migrationBuilder.CreateIndex(
                name: "ix_jobs_final_finished",
                table: "jobs",
                column: "finished_at",
                filter: "status IN ('succeeded', 'failed', 'cancelled', 'expired')");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_tenant_id_created_at",
                table: "jobs",
                columns: new[] { "tenant_id", "created_at" });

            migrationBuilder.CreateIndex(
                name: "ix_files_expires_at",
                table: "files",
                column: "expires_at",
                filter: "expires_at IS NOT NULL");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropTable(
                name: "tenant_settings");

            migrationBuilder.DropTable(
                name: "usage_daily");

            migrationBuilder.DropIndex(
                name: "ix_jobs_final_finished",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_jobs_tenant_id_created_at",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_files_expires_at",
                table: "files");

            migrationBuilder.DropColumn(
                name: "expires_at",
                table: "files");

            migrationBuilder.DropColumn(
                name: "output_expires_after_seconds",
                table: "batches");
        }
    }
}
