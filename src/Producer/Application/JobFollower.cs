using System.Runtime.CompilerServices;
using LlmServing.Contracts;
using LlmServing.ResultStore.Jobs;
using LlmServing.Producer.Messaging;

namespace LlmServing.Producer.Application;

/// <summary>One step of a followed job: new text (from <see cref="Offset"/> - its length), the end, or a quiet interval.</summary>
/// <param name="Delta">Text generated since the last step; null when nothing changed (a keep-alive moment).</param>
/// <param name="Offset">Characters (UTF-16 code units) of text delivered so far, this step included: the SSE event id.</param>
/// <param name="Job">The job as read at this step.</param>
public sealed record JobUpdate(string? Delta, int Offset, Job Job)
{
    public bool IsFinal => JobStatuses.IsFinal(Job.Status);
}

/// <summary>
/// Follows a job's text as the worker writes it (<c>partial_text</c>, then the final <c>output_text</c>), woken by
/// <see cref="JobChangeListener"/> rather than polling. Resumable: start from the offset a client already has, and no
/// text is repeated or skipped. A job whose streamed text was a prefix of its final text (always, except when a lease
/// lapsed and another worker ran it again with a different sample) ends with exactly the final text.
/// </summary>
public sealed class JobFollower(JobStore store, JobChangeListener listener)
{
    public async IAsyncEnumerable<JobUpdate> FollowAsync(
        Guid id, string tenantId, int offset, TimeSpan quiet, [EnumeratorCancellation] CancellationToken ct)
    {
        using var subscription = listener.Subscribe(id);
        while (true)
        {
            var job = await store.FindAsync(id, tenantId, ct);
            if (job is null)
            {
                yield break;
            }

            var final = JobStatuses.IsFinal(job.Status);
            var text = (final ? job.OutputText : job.PartialText) ?? "";
            if (text.Length > offset)
            {
                var delta = text[offset..];
                offset = text.Length;
                yield return new JobUpdate(delta, offset, job);
            }

            if (final)
            {
                yield return new JobUpdate(null, offset, job);
                yield break;
            }

            if (!await subscription.WaitAsync(quiet, ct))
            {
                yield return new JobUpdate(null, offset, job);
            }
        }
    }

    /// <summary>Waits until the job is no longer queued (or <paramref name="timeout"/> passes); returns it as last read.</summary>
    private static readonly TimeSpan SafetyPoll = TimeSpan.FromSeconds(5);

    public async Task<Job?> WaitStartedAsync(Guid id, string tenantId, TimeSpan timeout, CancellationToken ct)
    {
        using var subscription = listener.Subscribe(id);
        var deadline = DateTimeOffset.UtcNow + timeout;
        while (true)
        {
            var job = await store.FindAsync(id, tenantId, ct);
            var left = deadline - DateTimeOffset.UtcNow;
            if (job is null || job.Status != JobStatuses.Queued || left <= TimeSpan.Zero)
            {
                return job;
            }

            // The claim (queued -> running) notifies like progress does; the row is read again at the latest every 5 s
            // (and every 100 ms while the LISTEN connection is down) in case a notification was lost.
            await subscription.WaitAsync(left < SafetyPoll ? left : SafetyPoll, ct);
        }
    }
}
