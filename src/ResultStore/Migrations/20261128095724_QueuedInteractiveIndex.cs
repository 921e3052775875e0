using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace LlmServing.ResultStore.Migrations
{
    /// <inheritdoc />
    public partial class QueuedInteractiveIndex : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "ix_jobs_unpublished",
                table: "jobs");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_queued_interactive",
                table: "jobs",
                column: "created_at",
                filter: "status = 'queued' AND batch_id IS NULL");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "ix_jobs_queued_interactive",
                table: "jobs");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_unpublished",
                table: "jobs",
                column: "created_at",
                filter: "queued_at IS NULL AND status = 'queued'");
        }
    }
}
