using ML.Finetune.Generation;
using ML.Finetune.Tests.Shared;
using ML.Finetune.Training;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Cli;

/// <summary>The small library pieces the CLI relies on: checkpoint on cancellation, tokens per step, divergence advice, left truncation.</summary>
public class LibraryHookTests : IDisposable
{
    readonly string _dir = Fixtures.TempDir();
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static TrainerOptions Options(string? checkpoints) => new()
    {
        LearningRate = 3e-3, BatchSize = 4, MaxSteps = 9, Seed = 5, Schedule = LearningRateScheduleKind.Cosine, WarmupSteps = 2,
        GradientClipNorm = 1.0, CheckpointFolder = checkpoints,
    };

    static (Dictionary<string, Tensor> Weights, TrainingHistory History) Train(TrainerOptions o, Action<int>? beforeStep = null, List<long>? tokens = null)
    {
        var (model, method) = TinyTrainingRun.Create();
        try
        {
            int step = 0;
            var trainer = new FinetuneTrainer(o, padId: 0)
            {
                CheckAlive = () => beforeStep?.Invoke(step),
                Progress = p => { step = p.Record.Step + 1; tokens?.Add(p.Tokens); },
            };
            var history = trainer.Train(model, method, TinyTrainingRun.Data(24, 1));
            return (TinyTrainingRun.Weights(method), history);
        }
        finally { method.Dispose(); model.Dispose(); }
    }

    /// <remarks>
    /// Bit-exactness of the resumed run is checked end to end in child processes (ProgressResumeTests): in this process
    /// other tests train in parallel and draw from torch's global generator (dropout), so only the bookkeeping is compared here.
    /// </remarks>
    [Fact]
    public void A_run_cancelled_at_a_step_boundary_checkpoints_there_and_resumes_from_it()
    {
        using var scope = NewDisposeScope();
        var tokens = new List<long>();
        Train(Options(null), tokens: tokens);
        // Every step trains on 4 examples of 5 tokens: the progress counts them.
        Assert.Equal(Enumerable.Repeat(20L, 9), tokens);

        string ck = Path.Combine(_dir, "ck");
        Assert.Throws<OperationCanceledException>(() => Train(Options(ck), beforeStep: s => { if (s == 4) throw new OperationCanceledException(); }));
        Assert.Equal(["step-00000004"], TrainingCheckpoint.List(ck).Select(Path.GetFileName));
        using (var saved = TrainingCheckpoint.LoadLatest(ck))
        {
            Assert.Equal(4, saved!.State.Step);
            Assert.Equal(4, TrainingHistory.FromCsv(saved.State.HistoryCsv).Records.Count);
        }
        // Cancelled again right after resuming: nothing new to save, the checkpoint stays the resume point.
        Assert.Throws<OperationCanceledException>(() => Train(Options(ck), beforeStep: _ => throw new OperationCanceledException()));
        Assert.Equal(["step-00000004"], TrainingCheckpoint.List(ck).Select(Path.GetFileName));

        var (_, history) = Train(Options(ck));
        Assert.Equal(4, history.ResumedFromStep);
        Assert.Equal(Enumerable.Range(0, 9), history.Records.Select(r => r.Step));

        // Cancelled before the first step: nothing to save.
        string early = Path.Combine(_dir, "early");
        Assert.Throws<OperationCanceledException>(() => Train(Options(early), beforeStep: _ => throw new OperationCanceledException()));
        Assert.Empty(TrainingCheckpoint.List(early));
    }

    [Fact]
    public void Divergence_advice_depends_on_whether_gradients_are_clipped()
    {
        var clipped = new FinetuneDivergedException(3, double.NaN, "gradient norm", 1e6, 1.0);
        Assert.Contains("Lower the learning rate 1E+06", clipped.Message);
        Assert.Contains("already clipped to norm 1", clipped.Message);
        Assert.DoesNotContain("enable gradient clipping", clipped.Message);
        Assert.Equal("gradient norm", clipped.Quantity);
        var unclipped = new FinetuneDivergedException(3, double.PositiveInfinity, "loss", 0.1, null);
        Assert.Contains("clip gradients (GradientClipNorm)", unclipped.Message);
        Assert.Contains("step 3", unclipped.Message);
    }

    [Fact]
    public void Left_truncation_keeps_the_end_of_the_prompt_and_its_bos()
    {
        Assert.Equal(new long[] { 1, 8, 9 }, TextGenerator.TruncateLeft([1, 5, 6, 7, 8, 9], 3, bos: 1));
        Assert.Equal(new long[] { 7, 8, 9 }, TextGenerator.TruncateLeft([5, 6, 7, 8, 9], 3, bos: 1));
        Assert.Equal(new long[] { 7, 8, 9 }, TextGenerator.TruncateLeft([1, 5, 6, 7, 8, 9], 3, bos: null));
        Assert.Equal(new long[] { 5, 6 }, TextGenerator.TruncateLeft([5, 6], 3, bos: 1));
    }
}
