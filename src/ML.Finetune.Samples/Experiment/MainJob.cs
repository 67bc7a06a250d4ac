using System.Diagnostics;
using ML.Finetune.Models;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;

namespace ML.Finetune.Samples.Experiment;

public sealed record MainJobOptions
{
    public required string ModelFolder { get; init; }
    public required FactCorpus Facts { get; init; }
    public required string OutFolder { get; init; }
    public IReadOnlyList<string> Methods { get; init; } = FinetuneMethods.All.Select(m => m.Name).ToList();
    public long Seed { get; init; } = 1;
    public int Steps { get; init; } = 150;
    /// <summary>Method swept over SweepLearningRates on θ_p (null: no sweep).</summary>
    public string? SweepMethod { get; init; } = "full";
    public IReadOnlyList<double> SweepLearningRates { get; init; } = [1e-4, 3e-4, 1e-3, 3e-3];
    /// <summary>How many pretraining sentences the KL penalty and the KL metric use.</summary>
    public int KlSentences { get; init; } = 256;
}

public sealed record RunResult(string Method, string Init, double LearningRate, double TestAccuracy, double TrainAccuracy,
    double DistanceFromStart, double KlToPretrained, long TrainableParameters, double Seconds,
    IReadOnlyList<TrainingRecord> History, IReadOnlyList<(QaPair Pair, string Got, bool Ok)> TestRows);

public sealed record MainJobResult(MainJobOptions Options, IReadOnlyList<RunResult> Runs, IReadOnlyList<RunResult> Sweep,
    double BaseTestAccuracyPretrained, double BaseTestAccuracyRandom, double Seconds, string Device);

/// <summary>θ_p vs θ_0 under every method: finetune on train-split QA, evaluate on held-out QA.</summary>
public static class MainJob
{
    public const string Pretrained = "θ_p", Random = "θ_0";

    /// <summary>Runs every job; <paramref name="progress"/> hears of every step, <paramref name="cancel"/> stops at a step boundary.</summary>
    public static MainJobResult Run(MainJobOptions o, IProgressSink? progress = null, CancellationToken cancel = default)
    {
        o.Facts.RequireSplit("train");
        o.Facts.RequireSplit("test");
        var sw = Stopwatch.StartNew();
        var methods = o.Methods.Select(FinetuneMethods.Get).ToList();
        var tok = CausalLMTokenizer.FromFolder(o.ModelFolder);
        var text = new LmText(tok);
        var config = CausalLMConfig.Load(o.ModelFolder);
        var trainQa = QaBuilder.Build(o.Facts, "train");
        var testQa = QaBuilder.Build(o.Facts, "test");
        var trainData = trainQa.Select(p => text.PromptCompletion(p.Prompt, p.Completion)).ToList();
        var klText = new PretrainingCorpusBuilder((int)o.Seed + 1000).Build(o.Facts.Facts).Take(o.KlSentences).Select(text.Sentence).ToList();
        using var thetaP = CausalLMFactory.LoadPretrained(o.ModelFolder);
        foreach (var p in thetaP.parameters()) p.requires_grad = false;

        CausalLM Fresh(string init) => init == Pretrained ? CausalLMFactory.LoadPretrained(o.ModelFolder) : CausalLMFactory.CreateRandom(config, o.Seed + 7);

        double baseP = Evaluator.ExactMatch(thetaP, text, testQa).Accuracy;
        double baseR;
        using (var r = Fresh(Random)) baseR = Evaluator.ExactMatch(r, text, testQa).Accuracy;

        var jobs = new List<(FinetuneMethod m, string init, double lr, bool sweep)>();
        foreach (var m in methods) foreach (var init in new[] { Pretrained, Random }) jobs.Add((m, init, m.DefaultLearningRate, false));
        if (o.SweepMethod is string sm && o.SweepLearningRates.Count > 0)
            foreach (var lr in o.SweepLearningRates) jobs.Add((FinetuneMethods.Get(sm), Pretrained, lr, true));
        var runs = new List<RunResult>();
        var sweep = new List<RunResult>();
        for (int j = 0; j < jobs.Count; j++)
        {
            var (m, init, lr, isSweep) = jobs[j];
            // A sweep point at the default LR repeats a table run exactly (same seed): reuse it.
            var same = runs.FirstOrDefault(r => isSweep && r.Method == m.Name && r.Init == init && r.LearningRate == lr);
            if (same != null) { sweep.Add(same); continue; }
            cancel.ThrowIfCancellationRequested();
            var t0 = Stopwatch.StartNew();
            using var model = Fresh(init);
            using var start = Fresh(init);
            foreach (var p in start.parameters()) p.requires_grad = false;
            string label = $"[{j + 1}/{jobs.Count}] {m.Name} {init}" + (isSweep ? $" lr {lr.ToString("G2", System.Globalization.CultureInfo.InvariantCulture)}" : "");
            var outcome = m.Run(new MethodContext(model, start, text, trainData, klText, o.Steps, lr, o.Seed,
                p => progress?.Step(label, p.Record.Step + 1, p.TotalSteps, p.Record.CrossEntropy, p.Tokens), cancel));
            var method = outcome.Method;
            var (te, rows) = Evaluator.ExactMatch(model, text, testQa, method);
            var tr = Evaluator.ExactMatch(model, text, trainQa, method).Accuracy;
            double kl = method is null
                ? Metrics.MeanKl(model, thetaP, text, klText)
                : Metrics.MeanKl(ids => method.Logits(model, ids, TorchSharp.torch.ones_like(ids)), thetaP, text, klText);
            (method as IDisposable)?.Dispose();
            var result = new RunResult(m.Name, init, lr, te, tr, outcome.Distance,
                kl, outcome.TrainableParameters, t0.Elapsed.TotalSeconds, outcome.History, rows);
            (isSweep ? sweep : runs).Add(result);
        }
        return new MainJobResult(o, runs, sweep, baseP, baseR, sw.Elapsed.TotalSeconds, "cpu");
    }
}

/// <summary>Progress of the main job's runs: one call per optimizer step (the CLI draws a bar or prints lines).</summary>
public interface IProgressSink
{
    void Step(string label, int done, int total, double loss, long tokens);
}
