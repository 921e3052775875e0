using System.Text;
using LlmServing.Contracts;
using LlmServing.GpuWorker.Inference;

namespace LlmServing.Tests;

/// <summary>The scheduler's pure parts: stop matching, the KV budget, the admission order. No llama.cpp, no servers.</summary>
public sealed class SchedulerPartsTests
{
    private static int Feed(StringBuilder text, string piece, params string[] stops)
    {
        var before = text.Length;
        text.Append(piece);
        return StopMatcher.Find(text, before, stops);
    }

    [Test]
    public void ShouldStop_WhenAStopStringSpansTwoTokens()
    {
        var text = new StringBuilder();

        Assert.That(Feed(text, "Once upon a ti", "time"), Is.EqualTo(-1));
        Assert.That(Feed(text, "me there", "time"), Is.EqualTo("Once upon a ".Length));
    }

    [Test]
    public void ShouldCutAtTheEarliestStop_WhenSeveralMatchInOneToken()
    {
        var text = new StringBuilder("Tom had a red ball");

        Assert.That(Feed(text, ". He ran!", "!", "."), Is.EqualTo("Tom had a red ball".Length));
    }

    [Test]
    public void ShouldNotStopAgainOnOldText_WhenTheStopWasBeforeTheNewPiece()
    {
        // Text before previousLength was checked when it arrived; only matches ending in new text count.
        var text = new StringBuilder("a.b");
        var before = text.Length;
        text.Append("cd");

        Assert.That(StopMatcher.Find(text, before, ["."]), Is.EqualTo(-1));
    }

    [Test]
    public void ShouldFindAStopAtTheVeryStart_WhenTheFirstTokenIsTheStop()
    {
        Assert.That(Feed(new StringBuilder(), "\n\nHello", "\n\n"), Is.Zero);
    }

    [TestCase(10, 20, 0, 0, 100, Admission.Admit, TestName = "ShouldAdmit_WhenTheContextIsEmpty")]
    [TestCase(10, 20, 80, 2, 100, Admission.Wait, TestName = "ShouldWait_WhenTheReservationsWouldOverflowTheContext")]
    [TestCase(10, 20, 70, 2, 100, Admission.Admit, TestName = "ShouldAdmit_WhenItFitsExactly")]
    [TestCase(60, 50, 0, 0, 100, Admission.Reject, TestName = "ShouldReject_WhenPromptPlusMaxTokensCanNeverFit")]
    [TestCase(60, 50, 10, 1, 100, Admission.Reject, TestName = "ShouldReject_WhenItCanNeverFitEvenWhileOthersRun")]
    public void ShouldDecideAdmission(int prompt, int maxTokens, int reserved, int active, int context, Admission expected) =>
        Assert.That(AdmissionPolicy.Decide(prompt, maxTokens, reserved, active, context), Is.EqualTo(expected));

    [Test]
    public void ShouldAdmitRetriesThenInteractiveThenBatch_WhenAllLanesWait()
    {
        var queue = new AdmissionQueue();
        _ = queue.Enqueue(Request("batch", batch: true), CancellationToken.None);
        _ = queue.Enqueue(Request("interactive"), CancellationToken.None);
        var retried = new PendingRequest(Request("retried"), CancellationToken.None);
        queue.Retry(retried);

        var order = new List<string>();
        while (queue.TryPeek(out var next))
        {
            queue.Dequeue(next);
            order.Add(next.Request.Prompt!);
        }

        Assert.That(order, Is.EqualTo(new[] { "retried", "interactive", "batch" }));
    }

    [Test]
    public async Task ShouldCancelEveryWaitingRequest_WhenTheQueueCloses()
    {
        var queue = new AdmissionQueue();
        var waiting = queue.Enqueue(Request("left behind"), CancellationToken.None);

        queue.Close(CancellationToken.None);

        Assert.That(async () => await waiting, Throws.InstanceOf<OperationCanceledException>());
        Assert.That(() => queue.Enqueue(Request("too late"), CancellationToken.None), Throws.InstanceOf<OperationCanceledException>());
        await Task.CompletedTask;
    }

    [Test]
    public void ShouldKnowTheJobAndMarkItCancelled_WhenAUserCancelsAWaitingRequest()
    {
        var queue = new AdmissionQueue();
        var request = Request("to cancel");
        _ = queue.Enqueue(request, CancellationToken.None);

        Assert.That(queue.JobIds, Does.Contain(request.JobId));
        Assert.That(queue.RequestCancel(request.JobId), Is.True);
        Assert.That(queue.RequestCancel(Guid.NewGuid()), Is.False);
        Assert.That(queue.TryPeek(out var head) && head.CancelRequested, Is.True);
    }

    private static GenerationRequest Request(string prompt, bool batch = false) =>
        new(Guid.NewGuid(), prompt, null, new GenerationParameters { MaxTokens = 4 }) { IsBatch = batch };

    [Test]
    public void ShouldGiveLogprobsThatSumToOneAndSortedAlternatives_WhenComputedFromLogits()
    {
        float[] logits = [2f, -1f, 0.5f, 3f, 0f];

        var (chosen, top) = Logprobs.Of(logits, 3, 3);
        var all = Enumerable.Range(0, logits.Length).Select(i => Logprobs.Of(logits, i, 0).Chosen).ToList();

        Assert.That(all.Sum(l => Math.Exp(l)), Is.EqualTo(1.0).Within(1e-5));
        Assert.That(top.Select(t => t.Token), Is.EqualTo(new[] { 3, 0, 2 }));
        Assert.That(top[0].Logprob, Is.EqualTo(chosen).Within(1e-6));
        Assert.That(top.Select(t => t.Logprob), Is.Ordered.Descending);
        Assert.That(all, Is.All.LessThanOrEqualTo(0f));
    }

    [Test]
    public void ShouldWriteNoNulInTokenText_WhenATokenIsTheNulByte() =>
        Assert.That(Logprobs.Text([0x41, 0x00]), Is.EqualTo("A\uFFFD"));
}
