using System.Globalization;
using System.Text;

namespace ML.Finetune.Training;

/// <summary>
/// One optimizer step. Values are measured on the step's batch before the update. L2 and KL are unweighted (the
/// objective adds β·L2 and λ·KL); Distance = ‖θ−θ_p‖₂ is always reported; ValLoss is NaN where not evaluated.
/// </summary>
public sealed record TrainingRecord(int Step, double TrainLoss, double CrossEntropy, double L2, double KL, double Distance,
    double LearningRate, double GradNorm, double ValLoss);

/// <summary>Per-step records of a training run, with CSV export.</summary>
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
                .Select(v => Convert.ToString(v, CultureInfo.InvariantCulture))));
        return sb.ToString();
    }

    public void WriteCsv(string path) => File.WriteAllText(path, ToCsv());

    /// <summary>Renders the training loss (and the validation loss where evaluated) against the step as a PNG.</summary>
    public void SaveLossPlot(string path, int width = 800, int height = 500, string title = "Finetuning loss")
    {
        if (_records.Count == 0) throw new InvalidOperationException("The history is empty; nothing to plot.");
        var plot = new ScottPlot.Plot();
        var train = plot.Add.Scatter(_records.Select(r => (double)r.Step + 1).ToArray(), _records.Select(r => r.TrainLoss).ToArray());
        train.LegendText = "train loss";
        train.MarkerSize = 0;
        var val = _records.Where(r => !double.IsNaN(r.ValLoss)).ToList();
        if (val.Count > 0)
        {
            var v = plot.Add.Scatter(val.Select(r => (double)r.Step + 1).ToArray(), val.Select(r => r.ValLoss).ToArray());
            v.LegendText = "validation loss";
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss");
        plot.ShowLegend();
        plot.SavePng(path, width, height);
    }

    public static TrainingHistory FromCsv(string csv)
    {
        var h = new TrainingHistory();
        foreach (var line in csv.Split('\n').Skip(1).Where(l => l.Length > 0))
        {
            var f = line.Split(',').Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToArray();
            h.Add(new TrainingRecord((int)f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]));
        }
        return h;
    }
}

/// <summary>The loss became NaN or infinite. Thrown before any model is produced or written.</summary>
public sealed class FinetuneDivergedException : Exception
{
    public FinetuneDivergedException(int step, double loss, string what = "loss")
        : base($"Training diverged at step {step}: the {what} is {loss.ToString(CultureInfo.InvariantCulture)}. " +
               "Lower the learning rate or enable gradient clipping; no model was produced.")
    { Step = step; Loss = loss; }

    public int Step { get; }
    public double Loss { get; }
}
