using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace LlmServing.ResultStore.Migrations
{
    /// <inheritdoc />
    public partial class ResultEventsAndWebhooks : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<DateTimeOffset>(
                name: "event_sent_at",
                table: "jobs",
                type: "timestamp with time zone",
                nullable: true);

            migrationBuilder.AddColumn<string>(
                name: "webhook_url",
                table: "jobs",
                type: "character varying(2048)",
                maxLength: 2048,
                nullable: true);

            migrationBuilder.AddColumn<DateTimeOffset>(
                name: "event_sent_at",
                table: "batches",
                type: "timestamp with time zone",
                nullable: true);

            migrationBuilder.AddColumn<string>(
                name: "webhook_url",
                table: "batches",
                type: "character varying(2048)",
                maxLength: 2048,
                nullable: true);

            // Rows that were final before events existed owe none: an upgrade must not replay history to subscribers.
            migrationBuilder.Sql("UPDATE jobs SET event_sent_at = now() WHERE status IN ('succeeded', 'failed', 'cancelled', 'expired')");
            migrationBuilder.Sql("UPDATE batches SET event_sent_at = now() WHERE status IN ('completed', 'failed', 'cancelled', 'expired')");

            migrationBuilder.CreateTable(
                name: "tenant_webhooks",
                columns: table => new
                {
                    tenant_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    url = table.Column<string>(type: "character varying(2048)", maxLength: 2048, nullable: true),
                    secret = table.Column<string>(type: "character varying(128)", maxLength: 128, nullable: true),
                    updated_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_tenant_webhooks", x => x.tenant_id);
                });

            migrationBuilder.CreateTable(
                name: "webhook_deliveries",
                columns: table => new
                {
                    id = table.Column<Guid>(type: "uuid", nullable: false),
                    tenant_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    event_type = table.Column<string>(type: "character varying(32)", maxLength: 32, nullable: false),
                    subject_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    url = table.Column<string>(type: "character varying(2048)", maxLength: 2048, nullable: false),
                    payload = table.Column<string>(type: "text", nullable: false),
                    status = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: false),
                    attempts = table.Column<int>(type: "integer", nullable: false),
                    next_attempt_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false),
                    last_attempt_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true),
                    last_status_code = table.Column<int>(type: "integer", nullable: true),
                    last_error = table.Column<string>(type: "character varying(512)", maxLength: 512, nullable: true),
                    created_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false),
                    delivered_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true)
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_webhook_deliveries", x => x.id);
                });

            migrationBuilder.CreateIndex(
                name: "ix_jobs_event_owed",
                table: "jobs",
                column: "id",
                filter: "event_sent_at IS NULL AND status IN ('succeeded', 'failed', 'cancelled', 'expired')");

            migrationBuilder.CreateIndex(
                name: "ix_batches_event_owed",
                table: "batches",
                column: "created_at",
                filter: "event_sent_at IS NULL AND status IN ('completed', 'failed', 'cancelled', 'expired')");

            migrationBuilder.CreateIndex(
                name: "ix_webhook_deliveries_due",
                table: "webhook_deliveries",
                column: "next_attempt_at",
                filter: "status = 'pending'");

            migrationBuilder.CreateIndex(
                name: "ix_webhook_deliveries_tenant_id_subject_id",
                table: "webhook_deliveries",
                columns: new[] { "tenant_id", "subject_id" });
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropTable(
                name: "tenant_webhooks");

            migrationBuilder.DropTable(
                name: "webhook_deliveries");

            migrationBuilder.DropIndex(
                name: "ix_jobs_event_owed",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_batches_event_owed",
                table: "batches");

            migrationBuilder.DropColumn(
                name: "event_sent_at",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "webhook_url",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "event_sent_at",
                table: "batches");

            migrationBuilder.DropColumn(
                name: "webhook_url",
                table: "batches");
        }
    }
}
