using System.Diagnostics;
using ML.Finetune.Checkpoints;
using ML.Finetune.Tests.Foundation;
using ML.Finetune.Tests.Shared;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Engine;

public class CheckpointResumeTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), "mlft-ckpt-" + Guid.NewGuid().ToString("N"));
    public CheckpointResumeTests() => Directory.CreateDirectory(_dir);
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    const int Steps = 12, Every = 3;

    static Process Start(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(BuildInfo.Get("TrainProbePath"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        return Process.Start(psi)!;
    }

    static List<string> RunToEnd(params string[] args)
    {
        using var p = Start(args);
        var err = p.StandardError.ReadToEndAsync();
        var lines = p.StandardOutput.ReadToEnd().Split('\n').Select(l => l.Trim()).Where(l => l != "").ToList();
        Assert.True(p.WaitForExit(120_000), "train probe did not finish");
        Assert.True(p.ExitCode == 0, $"train probe failed ({p.ExitCode}): {err.Result}");
        return lines;
    }

    static void AssertSameWeights(string a, string b)
    {
        using var scope = NewDisposeScope();
        var x = SafeTensors.Load(a); var y = SafeTensors.Load(b);
        Assert.Equal(x.Keys.OrderBy(k => k), y.Keys.OrderBy(k => k));
        foreach (var k in x.Keys) Assert.True(x[k].eq(y[k]).all().item<bool>(), $"tensor {k} differs");
    }

    [Fact]
    public void KilledAfterSecondCheckpointResumesToTheSameWeights()
    {
        string reference = Path.Combine(_dir, "reference.safetensors"), resumed = Path.Combine(_dir, "resumed.safetensors");
        string ck = Path.Combine(_dir, "ck"), refCk = Path.Combine(_dir, "ref-ck");
        // Uninterrupted run, with the same checkpoint cadence (checkpoint writing must not perturb training).
        var refLines = RunToEnd(refCk, reference, $"{Steps}", $"{Every}");
        Assert.Contains("CHECKPOINT 12", refLines);

        using (var p = Start(ck, resumed, $"{Steps}", $"{Every}", "2"))
        {
            int seen = 0;
            string? line;
            while ((line = p.StandardOutput.ReadLine()) != null)
                if (line.StartsWith("CHECKPOINT") && ++seen == 2) { p.Kill(entireProcessTree: true); break; }
            p.WaitForExit(30_000);
            Assert.Equal(2, seen);
        }
        Assert.False(File.Exists(resumed));
        Assert.Equal(2, TrainingCheckpoint.List(ck).Count);

        var lines = RunToEnd(ck, resumed, $"{Steps}", $"{Every}");
        Assert.Contains("RESUMED 6", lines);
        Assert.DoesNotContain(lines, l => l.StartsWith("CHECKPOINT 3") || l.StartsWith("CHECKPOINT 6"));
        AssertSameWeights(reference, resumed);
    }

    [Fact]
    public void CorruptNewestCheckpointFallsBackToThePreviousOne()
    {
        string ck = Path.Combine(_dir, "ck");
        var warnings = new List<string>();
        Train(ck, steps: 6, every: 3, warnings);
        var all = TrainingCheckpoint.List(ck);
        Assert.Equal(2, all.Count);
        // Flip bytes in the newest checkpoint's weights: its SHA-256 no longer matches.
        var newest = Path.Combine(all[0], TrainingCheckpoint.TrainableFile);
        var bytes = File.ReadAllBytes(newest);
        bytes[^5] ^= 0xFF;
        File.WriteAllBytes(newest, bytes);

        using var loaded = TrainingCheckpoint.LoadLatest(ck, warnings.Add);
        Assert.NotNull(loaded);
        Assert.Equal(3, loaded!.State.Step);
        Assert.Contains(warnings, w => w.Contains("step-00000006") && w.Contains("SHA-256"));

        // A trainer resuming from that folder continues from step 3, with a warning, and finishes.
        warnings.Clear();
        var history = Train(ck, steps: 6, every: 3, warnings);
        Assert.Equal(3, history.ResumedFromStep);
        Assert.Contains(warnings, w => w.Contains("falling back"));

        // Every checkpoint corrupt: fail clearly, never start over silently or load garbage.
        foreach (var d in TrainingCheckpoint.List(ck)) File.WriteAllText(Path.Combine(d, TrainingCheckpoint.StateFile), "{ not json");
        var ex = Assert.Throws<InvalidDataException>(() => Train(ck, steps: 6, every: 3, warnings));
        Assert.Contains("no usable checkpoint", ex.Message);
    }

    [Fact]
    public void CheckpointOfAnotherRunIsRefused()
    {
        string ck = Path.Combine(_dir, "ck");
        Train(ck, steps: 3, every: 3, new List<string>());
        var ex = Assert.Throws<InvalidDataException>(() => Train(ck, steps: 3, every: 3, new List<string>(), seed: 99));
        Assert.Contains("another run", ex.Message);
    }

    [Fact]
    public void Bf16FullFinetuningResumesBitIdentically_TheFloat32MastersAreCheckpointed()
    {
        // Child processes: torch's thread count is process-wide and other tests change it, which changes bf16 rounding.
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b");
        string outA = Path.Combine(_dir, "a.safetensors"), outB = Path.Combine(_dir, "b.safetensors");
        Assert.Contains("DONE", RunToEnd(a, outA, "6", "3", "-1", "bf16"));
        using (var ck3 = TrainingCheckpoint.LoadLatest(a, _ => { }))
            Assert.Contains(ck3!.Optimizer.Keys, k => k.StartsWith("master."));
        // A folder holding only run a's step-3 checkpoint: resuming from it must end where run a ended.
        string step3 = TrainingCheckpoint.List(a).Single(d => d.EndsWith("step-00000003"));
        CopyDirectory(step3, Path.Combine(b, Path.GetFileName(step3)));
        Assert.Contains("RESUMED 3", RunToEnd(b, outB, "6", "3", "-1", "bf16"));
        using var scope = NewDisposeScope();
        Assert.All(SafeTensors.Load(outA).Values, t => Assert.Equal(ScalarType.BFloat16, t.dtype));
        AssertSameWeights(outA, outB);
    }

    static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }

    static TrainingHistory Train(string ck, int steps, int every, List<string> warnings, long seed = 5)
    {
        using var scope = NewDisposeScope();
        var (model, method) = TinyTrainingRun.Create();
        var trainer = new FinetuneTrainer(new TrainerOptions
        {
            LearningRate = 3e-3, BatchSize = 4, MaxSteps = steps, Seed = seed, CheckpointFolder = ck, CheckpointEveryNSteps = every,
        }, padId: 0) { Warning = warnings.Add };
        var h = trainer.Train(model, method, TinyTrainingRun.Data(40, 1));
        method.Dispose();
        model.Dispose();
        return h;
    }
}
