using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace LlmServing.ResultStore.Migrations
{
    /// <inheritdoc />
    public partial class DeadlineAndCancellation : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<DateTimeOffset>(
                name: "cancel_requested_at",
                table: "jobs",
                type: "timestamp with time zone",
                nullable: true);

            migrationBuilder.AddColumn<DateTimeOffset>(
                name: "deadline",
                table: "jobs",
                type: "timestamp with time zone",
                nullable: true);

            migrationBuilder.CreateIndex(
                name: "ix_jobs_queued_deadline",
                table: "jobs",
                column: "deadline",
                filter: "status = 'queued' AND deadline IS NOT NULL");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "ix_jobs_queued_deadline",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "cancel_requested_at",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "deadline",
                table: "jobs");
        }
    }
}
