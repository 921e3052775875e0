using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace LlmServing.ResultStore.Migrations
{
    /// <inheritdoc />
    public partial class ResultsOutRetentionAndFairShare : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "ix_jobs_unpublished",
                table: "jobs");

            migrationBuilder.AddColumn<int>(
                name: "estimated_tokens",
                table: "jobs",
                type: "integer",
                nullable: true);

            migrationBuilder.AddColumn<DateTimeOffset>(
                name: "event_sent_at",
                table: "jobs",
                type: "timestamp with time zone",
                nullable: true);

            migrationBuilder.AddColumn<string>(
                name: "partial_text",
                table: "jobs",
                type: "text",
                nullable: true);

            migrationBuilder.AddColumn<int>(
                name: "partial_tokens",
                table: "jobs",
                type: "integer",
                nullable: true);

            migrationBuilder.AddColumn<string>(
                name: "webhook_url",
                table: "jobs",
                type: "character varying(2048)",
                maxLength: 2048,
                nullable: true);

            migrationBuilder.AddColumn<DateTimeOffset>(
                name: "expires_at",
                table: "files",
                type: "timestamp with time zone",
                nullable: true);

            migrationBuilder.AddColumn<DateTimeOffset>(
                name: "event_sent_at",
                table: "batches",
                type: "timestamp with time zone",
                nullable: true);

            migrationBuilder.AddColumn<int>(
                name: "output_expires_after_seconds",
                table: "batches",
                type: "integer",
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

            // Streams wait on this instead of polling: an interactive job's progress and its end wake the Producer's
            // LISTEN connection. Batch lines and the claim (queued -> running) do not notify.
            migrationBuilder.Sql("""
                CREATE FUNCTION llmserving_notify_job_progress() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_notify('llmserving_job_progress', NEW.id::text);
                    RETURN NULL;
                END $$;
                CREATE TRIGGER jobs_notify_progress AFTER UPDATE ON jobs FOR EACH ROW
                WHEN (NEW.batch_id IS NULL AND (OLD.partial_tokens IS DISTINCT FROM NEW.partial_tokens
                      OR (NEW.status IN ('succeeded', 'failed', 'cancelled', 'expired') AND OLD.status IS DISTINCT FROM NEW.status)))
                EXECUTE FUNCTION llmserving_notify_job_progress();
                """);

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
                name: "ix_jobs_batch_backlog",
                table: "jobs",
                columns: new[] { "tenant_id", "batch_id", "line_number" },
                filter: "status = 'queued' AND queued_at IS NULL AND batch_id IS NOT NULL");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_batch_inflight",
                table: "jobs",
                column: "tenant_id",
                filter: "batch_id IS NOT NULL AND (status = 'running' OR (status = 'queued' AND queued_at IS NOT NULL))");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_event_owed",
                table: "jobs",
                column: "id",
                filter: "event_sent_at IS NULL AND status IN ('succeeded', 'failed', 'cancelled', 'expired')");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_final_finished",
                table: "jobs",
                column: "finished_at",
                filter: "status IN ('succeeded', 'failed', 'cancelled', 'expired')");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_queued_interactive",
                table: "jobs",
                column: "created_at",
                filter: "status = 'queued' AND batch_id IS NULL");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_tenant_interactive",
                table: "jobs",
                columns: new[] { "tenant_id", "id" },
                filter: "batch_id IS NULL");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_unpublished",
                table: "jobs",
                column: "created_at",
                filter: "queued_at IS NULL AND status = 'queued' AND batch_id IS NULL");

            migrationBuilder.CreateIndex(
                name: "ix_files_expires_at",
                table: "files",
                column: "expires_at",
                filter: "expires_at IS NOT NULL");

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
            migrationBuilder.Sql("DROP TRIGGER IF EXISTS jobs_notify_progress ON jobs; DROP FUNCTION IF EXISTS llmserving_notify_job_progress();");

            migrationBuilder.DropTable(
                name: "tenant_settings");

            migrationBuilder.DropTable(
                name: "tenant_webhooks");

            migrationBuilder.DropTable(
                name: "usage_daily");

            migrationBuilder.DropTable(
                name: "webhook_deliveries");

            migrationBuilder.DropIndex(
                name: "ix_jobs_batch_backlog",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_jobs_batch_inflight",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_jobs_event_owed",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_jobs_final_finished",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_jobs_queued_interactive",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_jobs_tenant_interactive",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_jobs_unpublished",
                table: "jobs");

            migrationBuilder.DropIndex(
                name: "ix_files_expires_at",
                table: "files");

            migrationBuilder.DropIndex(
                name: "ix_batches_event_owed",
                table: "batches");

            migrationBuilder.DropColumn(
                name: "estimated_tokens",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "event_sent_at",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "partial_text",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "partial_tokens",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "webhook_url",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "expires_at",
                table: "files");

            migrationBuilder.DropColumn(
                name: "event_sent_at",
                table: "batches");

            migrationBuilder.DropColumn(
                name: "output_expires_after_seconds",
                table: "batches");

            migrationBuilder.DropColumn(
                name: "webhook_url",
                table: "batches");

            migrationBuilder.CreateIndex(
                name: "ix_jobs_unpublished",
                table: "jobs",
                column: "created_at",
                filter: "queued_at IS NULL AND status = 'queued'");
        }
    }
}
