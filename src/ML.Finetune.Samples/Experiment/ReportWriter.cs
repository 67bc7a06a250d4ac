using System.Globalization;
using System.Text;
using ML.Finetune.Training;
using ScottPlot;

namespace ML.Finetune.Samples.Experiment;

/// <summary>Writes report.md and the PNG plots of a main-job result.</summary>
public static class ReportWriter
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    public static string Pct(double v) => (v * 100).ToString("F1", Inv) + "%";
    public static string Num(double v, string f = "F3") => v.ToString(f, Inv);
    /// <summary>A path relative to the working directory, so reports carry no machine-specific prefix.</summary>
    public static string Shown(string? path) => string.IsNullOrEmpty(path) ? "" : Path.GetRelativePath(Environment.CurrentDirectory, path);

    /// <summary>The file names <see cref="Write"/> produces for these methods.</summary>
    public static IReadOnlyList<string> FileNames(IEnumerable<string> methods, bool sweep) =>
        ["report.md", .. methods.Select(LossPlotName), "accuracy.png", .. sweep ? new[] { "lr_sweep.png" } : []];

    static string LossPlotName(string method) => $"loss_{Safe(method)}.png";

    /// <summary>
    /// Writes report.md and the plots into <paramref name="folder"/>. <paramref name="modelShown"/>: how the report names
    /// the model (default: the options' folder).
    /// </summary>
    public static IReadOnlyList<string> Write(MainJobResult r, string folder, string? pretrainInfo = null, string? modelShown = null)
    {
        Directory.CreateDirectory(folder);
        var files = new List<string>();
        foreach (var method in r.Runs.Select(x => x.Method).Distinct())
        {
            string f = Path.Combine(folder, LossPlotName(method));
            LossPlot(r.Runs.Where(x => x.Method == method).ToList(), method).SavePng(f, 900, 450);
            files.Add(f);
        }
        string acc = Path.Combine(folder, "accuracy.png");
        AccuracyPlot(r).SavePng(acc, 900, 450); files.Add(acc);
        if (r.Sweep.Count > 0)
        {
            string s = Path.Combine(folder, "lr_sweep.png");
            SweepPlot(r.Sweep).SavePng(s, 900, 450); files.Add(s);
        }
        string md = Path.Combine(folder, "report.md");
        File.WriteAllText(md, Markdown(r, files.Select(Path.GetFileName).ToList()!, pretrainInfo, modelShown));
        files.Insert(0, md);
        return files;
    }

    static string Safe(string s) => new(s.Select(c => char.IsLetterOrDigit(c) ? c : '_').ToArray());

    public static string TableRow(RunResult x) =>
        $"| {x.Method} | {x.Init} | {Pct(x.TestAccuracy)} | {Pct(x.TrainAccuracy)} | {Num(x.DistanceFromStart)} | {Num(x.KlToPretrained, "F4")} | {x.TrainableParameters:N0} | {Num(x.Seconds, "F1")} |";

    public static string Markdown(MainJobResult r, IReadOnlyList<string> images, string? pretrainInfo, string? modelShown = null)
    {
        var o = r.Options;
        var sb = new StringBuilder();
        sb.AppendLine("# Main job: pretrained θ_p vs random θ_0 on held-out university facts");
        sb.AppendLine();
        sb.AppendLine($"Facts: {Shown(o.Facts.Source)} ({o.Facts.Train.Count} train, {o.Facts.Test.Count} test universities), sha256 `{o.Facts.Hash()[..16]}…`. " +
                      $"Model: `{modelShown ?? Shown(o.ModelFolder)}`. Seed {o.Seed}, {o.Steps} steps per run, batch 16. Device {r.Device}. Wall time {Num(r.Seconds, "F0")} s.");
        sb.AppendLine();
        sb.AppendLine("Task: finetune on `Q: Where is <university>? A:` → ` <city>` for the train split; exact match of the greedy answer on the test split (held out) and on the train split.");
        sb.AppendLine($"Before finetuning: θ_p held-out {Pct(r.BaseTestAccuracyPretrained)}, θ_0 held-out {Pct(r.BaseTestAccuracyRandom)}.");
        sb.AppendLine();
        sb.AppendLine("| method | init | held-out acc | train acc | ‖θ−θ_start‖₂ | KL to θ_p (pretraining text, nats/token) | trainable params | wall s |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var x in r.Runs) sb.AppendLine(TableRow(x));
        sb.AppendLine();
        sb.AppendLine("θ_start is the model the run started from (θ_p or θ_0); the L2/KL penalties pull towards it. " +
                      "Methods: " + string.Join("; ", o.Methods.Select(m => $"`{m}` = {FinetuneMethods.Get(m).Description}, lr {FinetuneMethods.Get(m).DefaultLearningRate.ToString("G3", Inv)}")) + ".");
        if (r.Sweep.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine($"## Learning-rate sweep ({r.Sweep[0].Method}, θ_p)");
            sb.AppendLine();
            sb.AppendLine("| lr | held-out acc | train acc | ‖θ−θ_p‖₂ |");
            sb.AppendLine("|---|---|---|---|");
            foreach (var x in r.Sweep) sb.AppendLine($"| {x.LearningRate.ToString("G3", Inv)} | {Pct(x.TestAccuracy)} | {Pct(x.TrainAccuracy)} | {Num(x.DistanceFromStart)} |");
        }
        var best = r.Runs.FirstOrDefault(x => x.Init == MainJob.Pretrained);
        if (best != null)
        {
            sb.AppendLine();
            sb.AppendLine($"## Held-out answers ({best.Method}, θ_p), first 10");
            sb.AppendLine();
            foreach (var (pair, got, ok) in best.TestRows.Take(10)) sb.AppendLine($"- `{pair.Prompt}` → `{got}` {(ok ? "✓" : $"✗ (expected `{pair.Answer}`)")}");
        }
        if (pretrainInfo != null) { sb.AppendLine(); sb.AppendLine("## θ_p pretraining"); sb.AppendLine(); sb.AppendLine("```json"); sb.AppendLine(pretrainInfo.Trim()); sb.AppendLine("```"); }
        sb.AppendLine();
        sb.AppendLine("## Plots");
        foreach (var i in images) sb.AppendLine($"![{i}]({i})");
        return sb.ToString();
    }

    static double[] Smooth(IReadOnlyList<double> ys, int w)
    {
        var r = new double[ys.Count];
        for (int i = 0; i < ys.Count; i++) { int a = Math.Max(0, i - w + 1); r[i] = ys.Skip(a).Take(i - a + 1).Average(); }
        return r;
    }

    static string InitName(string init) => init == MainJob.Pretrained ? "theta_p (pretrained)" : "theta_0 (random)";

    static readonly Color[] InitColors = [Colors.SteelBlue, Colors.OrangeRed];

    /// <summary>
    /// Cross-entropy per init; for full+l2 and full+kl also the penalty term as it enters the objective (trainLoss − ce =
    /// β·‖θ−θ_start‖² or λ·KL), dashed, on the right axis: it is orders of magnitude smaller. Both smoothed over 10 steps.
    /// </summary>
    public static Plot LossPlot(IReadOnlyList<RunResult> runs, string method)
    {
        var plt = new Plot();
        string? penalty = method switch { "full+l2" => "L2 term beta*||theta-theta_start||^2", "full+kl" => "KL term lambda*KL(p_theta_p || p_theta)", _ => null };
        for (int k = 0; k < runs.Count; k++)
        {
            var x = runs[k];
            var color = InitColors[x.Init == MainJob.Pretrained ? 0 : 1];
            double[] steps = x.History.Select(h => (double)h.Step + 1).ToArray();
            var s = plt.Add.Scatter(steps, Smooth(x.History.Select(h => h.CrossEntropy).ToList(), 10));
            s.LegendText = $"cross-entropy, {InitName(x.Init)}";
            s.MarkerSize = 0; s.Color = color;
            if (penalty == null) continue;
            var p = plt.Add.Scatter(steps, Smooth(x.History.Select(h => h.TrainLoss - h.CrossEntropy).ToList(), 10));
            p.LegendText = $"{penalty.Split(' ')[0]} term, {InitName(x.Init)} (right axis)";
            p.MarkerSize = 0; p.Color = color; p.LinePattern = LinePattern.Dashed;
            p.Axes.YAxis = plt.Axes.Right;
        }
        plt.Title($"training loss: {method}");
        plt.XLabel("step (curves smoothed over 10 steps)"); plt.YLabel("cross-entropy (completion tokens)");
        if (penalty != null) plt.Axes.Right.Label.Text = penalty;
        PlotConventions.LegendOutside(plt);
        return plt;
    }

    /// <summary>Held-out accuracy per method, θ_p and θ_0 side by side, each bar labelled with its value.</summary>
    public static Plot AccuracyPlot(MainJobResult r)
    {
        var plt = new Plot();
        var methods = r.Runs.Select(x => x.Method).Distinct().ToList();
        var bars = new List<Bar>();
        for (int i = 0; i < methods.Count; i++)
            for (int k = 0; k < 2; k++)
            {
                var run = r.Runs.FirstOrDefault(x => x.Method == methods[i] && x.Init == (k == 0 ? MainJob.Pretrained : MainJob.Random));
                if (run == null) continue;
                // The label names the value, so a 0% bar (no visible bar at all) still reads as a result.
                bars.Add(new Bar { Position = i * 3 + k, Value = run.TestAccuracy * 100, FillColor = InitColors[k], Label = Pct(run.TestAccuracy) });
            }
        var bp = plt.Add.Bars(bars);
        bp.ValueLabelStyle.FontSize = 11;
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            methods.Select((_, i) => i * 3 + 0.5).ToArray(), methods.ToArray());
        plt.Legend.ManualItems.Add(new LegendItem { LabelText = InitName(MainJob.Pretrained), FillColor = InitColors[0] });
        plt.Legend.ManualItems.Add(new LegendItem { LabelText = InitName(MainJob.Random), FillColor = InitColors[1] });
        PlotConventions.LegendOutside(plt);
        PlotConventions.PercentAxis(plt, "held-out exact match");
        plt.Title("held-out exact-match accuracy after finetuning");
        return plt;
    }

    /// <summary>Held-out and train accuracy against the learning rate (log axis labelled 1e-4, 3e-4, …).</summary>
    public static Plot SweepPlot(IReadOnlyList<RunResult> sweep)
    {
        var plt = new Plot();
        double[] xs = sweep.Select(x => PlotConventions.LogPosition(x.LearningRate)).ToArray();
        var s = plt.Add.Scatter(xs, sweep.Select(x => x.TestAccuracy * 100).ToArray());
        s.LegendText = "held-out";
        var t = plt.Add.Scatter(xs, sweep.Select(x => x.TrainAccuracy * 100).ToArray());
        t.LegendText = "train";
        PlotConventions.LegendOutside(plt);
        plt.Title($"learning-rate sweep: {sweep[0].Method}, theta_p");
        PlotConventions.PercentAxis(plt, "exact-match accuracy");
        PlotConventions.LogLearningRateAxis(plt, sweep.Select(x => x.LearningRate));
        return plt;
    }
}
