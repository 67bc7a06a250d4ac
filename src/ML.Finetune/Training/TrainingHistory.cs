using System.Globalization;
using System.Text;

namespace ML.Finetune.Training;

/// <summary>
/// One optimizer step. Values are measured on the step's batch before the update. L2 and KL are unweighted (the
/// objective adds β·L2 and λ·KL); Distance = ‖θ−θ_p‖₂ is always reported; ValLoss is NaN where not evaluated.
/// </summary>
public sealed record TrainingRecord(int Step, double TrainLoss, double CrossEntropy, double L2, double KL, double Distance,
    double LearningRate, double GradNorm, double ValLoss);

/// <summary>
/// Per-step records of a training run, with CSV export. CSV columns: step (0-based), trainLoss (the objective: ce + β·l2
/// + λ·kl), ce, l2, kl (unweighted), distance (‖θ−θ_p‖₂), lr (the learning rate of that step's update: with warmup it
/// rises linearly from 0, as in Hugging Face's schedulers, so step 0 updates only the optimizer's moments), gradNorm
/// (before clipping), valLoss (empty where the step was not evaluated).
/// </summary>
public sealed class TrainingHistory
{
    private readonly List<TrainingRecord> _records = new();
    public IReadOnlyList<TrainingRecord> Records => _records;
    public void Add(TrainingRecord r) => _records.Add(r);
    public double? FinalValidationLoss => _records.LastOrDefault(r => !double.IsNaN(r.ValLoss))?.ValLoss;
    /// <summary>Set when early stopping ended the run: the last step that ran.</summary>
    public int? EarlyStoppedAtStep { get; set; }
    /// <summary>The step whose validation loss was best (its weights were restored when early stopping restores).</summary>
    public int? BestStep { get; set; }
    public double? BestValidationLoss { get; set; }
    /// <summary>Set when the run resumed from a checkpoint: the number of steps that checkpoint had completed.</summary>
    public int? ResumedFromStep { get; set; }

    public string ToCsv()
    {
        var sb = new StringBuilder("step,trainLoss,ce,l2,kl,distance,lr,gradNorm,valLoss\n");
        foreach (var r in _records)
            sb.AppendLine(string.Join(",", new object[] { r.Step, r.TrainLoss, r.CrossEntropy, r.L2, r.KL, r.Distance, r.LearningRate, r.GradNorm, r.ValLoss }
                .Select(v => v is double d && double.IsNaN(d) ? "" : Convert.ToString(v, CultureInfo.InvariantCulture))));
        return sb.ToString();
    }

    public void WriteCsv(string path) => File.WriteAllText(path, ToCsv());

    /// <summary>
    /// Renders the training loss (and the validation loss where evaluated) against the step as a PNG. When the objective
    /// has penalty terms, the cross-entropy and the penalty (trainLoss − ce = β·l2 + λ·kl, on its own right axis) are drawn
    /// too. The legend sits outside the data area.
    /// </summary>
    public void SaveLossPlot(string path, int width = 800, int height = 500, string title = "Finetuning loss") =>
        LossPlot(title).SavePng(path, width, height);

    /// <summary>The plot <see cref="SaveLossPlot"/> renders (to render elsewhere or restyle).</summary>
    public ScottPlot.Plot LossPlot(string title = "Finetuning loss")
    {
        if (_records.Count == 0) throw new InvalidOperationException("The history is empty; nothing to plot.");
        var plot = new ScottPlot.Plot();
        double[] steps = _records.Select(r => (double)r.Step + 1).ToArray();
        var train = plot.Add.Scatter(steps, _records.Select(r => r.TrainLoss).ToArray());
        train.LegendText = "train loss (objective)";
        train.MarkerSize = 0;
        double[] penalty = _records.Select(r => r.TrainLoss - r.CrossEntropy).ToArray();
        if (penalty.Any(p => Math.Abs(p) > 1e-12))
        {
            var ce = plot.Add.Scatter(steps, _records.Select(r => r.CrossEntropy).ToArray());
            ce.LegendText = "cross-entropy";
            ce.MarkerSize = 0;
            var pen = plot.Add.Scatter(steps, penalty);
            pen.LegendText = "penalty (right axis)";
            pen.MarkerSize = 0;
            pen.LinePattern = ScottPlot.LinePattern.Dashed;
            pen.Axes.YAxis = plot.Axes.Right;
            plot.Axes.Right.Label.Text = "penalty β·l2 + λ·kl";
        }
        var val = _records.Where(r => !double.IsNaN(r.ValLoss)).ToList();
        if (val.Count > 0)
        {
            var v = plot.Add.Scatter(val.Select(r => (double)r.Step + 1).ToArray(), val.Select(r => r.ValLoss).ToArray());
            v.LegendText = "validation loss";
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss");
        PlotConventions.LegendOutside(plot);
        return plot;
    }

    public static TrainingHistory FromCsv(string csv)
    {
        var h = new TrainingHistory();
        foreach (var line in csv.Split('\n').Skip(1).Where(l => l.Length > 0))
        {
            var f = line.Split(',').Select(s => s.Trim().Length == 0 ? double.NaN : double.Parse(s, CultureInfo.InvariantCulture)).ToArray();
            h.Add(new TrainingRecord((int)f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]));
        }
        return h;
    }
}

/// <summary>The loss or the gradient norm became NaN or infinite. Thrown before any model is produced or written.</summary>
public sealed class FinetuneDivergedException : Exception
{
    /// <param name="step">0-based optimizer step (as in the history).</param>
    /// <param name="learningRate">The base learning rate of the run, named in the message when known.</param>
    /// <param name="gradientClipNorm">The clipping norm in effect (null or ≤ 0: off): the advice depends on it.</param>
    public FinetuneDivergedException(int step, double loss, string what = "loss", double? learningRate = null, double? gradientClipNorm = null)
        : base($"Training diverged at step {step}: the {what} is {loss.ToString(CultureInfo.InvariantCulture)}. " + Advice(learningRate, gradientClipNorm))
    { Step = step; Loss = loss; Quantity = what; }

    public int Step { get; }
    /// <summary>The non-finite value (of <see cref="Quantity"/>).</summary>
    public double Loss { get; }
    /// <summary>What became non-finite: "loss" or "gradient norm".</summary>
    public string Quantity { get; }

    static string Advice(double? lr, double? clip)
    {
        string rate = lr is double r ? $"the learning rate {r.ToString("G3", CultureInfo.InvariantCulture)}" : "the learning rate";
        return clip is double c && c > 0
            ? $"Lower {rate}: gradients are already clipped to norm {c.ToString("G3", CultureInfo.InvariantCulture)}, so the steps are too large for this model. No model was produced."
            : $"Lower {rate} or clip gradients (GradientClipNorm). No model was produced.";
    }
}
