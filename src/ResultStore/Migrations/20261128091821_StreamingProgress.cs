using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace LlmServing.ResultStore.Migrations
{
    /// <inheritdoc />
    public partial class StreamingProgress : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
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
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.Sql("DROP TRIGGER IF EXISTS jobs_notify_progress ON jobs; DROP FUNCTION IF EXISTS llmserving_notify_job_progress();");

            migrationBuilder.DropColumn(
                name: "partial_text",
                table: "jobs");

            migrationBuilder.DropColumn(
                name: "partial_tokens",
                table: "jobs");
        }
    }
}
