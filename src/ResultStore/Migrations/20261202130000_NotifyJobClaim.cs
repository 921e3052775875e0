using LlmServing.ResultStore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace LlmServing.ResultStore.Migrations
{
    /// <summary>
    /// The claim of an interactive job (queued -> running) notifies too, on the same channel as its progress and end:
    /// the synchronous OpenAI endpoints wait for it instead of reading the row every quarter second.
    /// </summary>
    [DbContext(typeof(LlmServingDbContext))]
    [Migration("20261202130000_NotifyJobClaim")]
    public partial class NotifyJobClaim : Migration
    {
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.Sql("""
                DROP TRIGGER IF EXISTS jobs_notify_progress ON jobs;
                CREATE TRIGGER jobs_notify_progress AFTER UPDATE ON jobs FOR EACH ROW
                WHEN (NEW.batch_id IS NULL AND (OLD.partial_tokens IS DISTINCT FROM NEW.partial_tokens
                      OR (NEW.status IN ('running', 'succeeded', 'failed', 'cancelled', 'expired') AND OLD.status IS DISTINCT FROM NEW.status)))
                EXECUTE FUNCTION llmserving_notify_job_progress();
                """);
        }

        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.Sql("""
                DROP TRIGGER IF EXISTS jobs_notify_progress ON jobs;
                CREATE TRIGGER jobs_notify_progress AFTER UPDATE ON jobs FOR EACH ROW
                WHEN (NEW.batch_id IS NULL AND (OLD.partial_tokens IS DISTINCT FROM NEW.partial_tokens
                      OR (NEW.status IN ('succeeded', 'failed', 'cancelled', 'expired') AND OLD.status IS DISTINCT FROM NEW.status)))
                EXECUTE FUNCTION llmserving_notify_job_progress();
                """);
        }
    }
}
