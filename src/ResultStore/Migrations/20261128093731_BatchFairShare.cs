using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace LlmServing.ResultStore.Migrations
{
    /// <inheritdoc />
    public partial class BatchFairShare : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.CreateIndex(
                name: "ix_jobs_batch_backlog",
                table: "jobs",
                columns: new[] { "tenant_id", "batch_id", "line_number" },
                filter: "status = 'queued' AND queued_at IS NULL AND batch_id IS NOT NULL");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_batch_inflight",
                table: "jobs",
                column: "tenant_id",
                filter: "batch_id IS NOT NULL AND (status = 'running' OR (status = 'queued' AND queued_at IS NOT NULL))");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "ix_jobs_batch_backlog",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_jobs_batch_inflight",
                table: "jobs");
        }
    }
}
