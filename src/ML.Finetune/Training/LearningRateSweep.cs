using ML.Finetune.Estimators;
using ML.Finetune.Transformers;
using Microsoft.ML;

namespace ML.Finetune.Training;

/// <summary>Settings of <see cref="LearningRateSweep"/>.</summary>
public sealed class LearningRateSweepOptions
{
    /// <summary>Learning rates to try; when null, <see cref="Count"/> values log-spaced from Min to Max.</summary>
    public double[]? Candidates { get; set; }
    public double MinLearningRate { get; set; } = 1e-5;
    public double MaxLearningRate { get; set; } = 1e-2;
    public int Count { get; set; } = 5;
    /// <summary>Optimizer steps per candidate (the estimator's MaxSteps).</summary>
    public int StepsPerCandidate { get; set; } = 50;
    /// <summary>Seed for every candidate (same data order, same initialisation): the sweep is reproducible.</summary>
    public long Seed { get; set; }
    /// <summary>Optional extra score per candidate: (fitted transformer, validation data) → metric (higher is better is not assumed).</summary>
    public Func<FinetuneTransformer, IDataView, double>? Metric { get; set; }
    public string MetricName { get; set; } = "metric";
    /// <summary>Write the lr → validation-loss curve here as a PNG (null = no plot; rank 0 only under mpirun).</summary>
    public string? PlotPath { get; set; }

    public IReadOnlyList<double> ResolveCandidates()
    {
        if (Candidates is { Length: > 0 } c) return c;
        if (Count < 1 || !(MinLearningRate > 0) || !(MaxLearningRate >= MinLearningRate))
            throw new ArgumentOutOfRangeException(nameof(Count), "need Count ≥ 1 and 0 < MinLearningRate ≤ MaxLearningRate");
        if (Count == 1) return [MinLearningRate];
        double a = Math.Log10(MinLearningRate), b = Math.Log10(MaxLearningRate);
        return Enumerable.Range(0, Count).Select(i => Math.Pow(10, a + (b - a) * i / (Count - 1))).ToArray();
    }
}

/// <summary>One candidate's outcome. ValidationLoss is NaN when the run diverged (Error says why).</summary>
public sealed record LearningRateSweepRow(double LearningRate, double ValidationLoss, double? Metric, string? Error);

public sealed class LearningRateSweepResult : IDisposable
{
    public required IReadOnlyList<LearningRateSweepRow> Rows { get; init; }
    public required double BestLearningRate { get; init; }
    /// <summary>The candidate with the lowest validation loss, trained; the caller owns it.</summary>
    public required FinetuneTransformer BestTransformer { get; init; }
    public string? PlotPath { get; init; }

    public string ToTable()
    {
        var sb = new System.Text.StringBuilder("learning_rate,validation_loss,metric,error\n");
        foreach (var r in Rows)
            sb.AppendLine(string.Join(",", r.LearningRate.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
                r.ValidationLoss.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
                r.Metric?.ToString("R", System.Globalization.CultureInfo.InvariantCulture) ?? "", r.Error ?? ""));
        return sb.ToString();
    }

    public void Dispose() => BestTransformer.Dispose();
}

/// <summary>
/// Learning-rate sweep for any of our estimators: each candidate trains a fresh estimator (from
/// <c>createEstimator</c>) for the same step budget and seed on the training data, and is scored on the validation
/// data by its validation loss (mean CE per completion token, the trainer's own) and an optional metric. The best
/// (lowest validation loss) transformer is kept; the others are disposed as soon as they are scored.
/// </summary>
public static class LearningRateSweep
{
    public static LearningRateSweepResult Run(Func<FinetuneEstimatorBase> createEstimator, IDataView trainingData, IDataView validationData,
        LearningRateSweepOptions? options = null, Action<LearningRateSweepRow>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(createEstimator); ArgumentNullException.ThrowIfNull(trainingData); ArgumentNullException.ThrowIfNull(validationData);
        options ??= new LearningRateSweepOptions();
        if (options.StepsPerCandidate < 1) throw new ArgumentOutOfRangeException(nameof(options), "StepsPerCandidate must be ≥ 1");
        var rows = new List<LearningRateSweepRow>();
        FinetuneTransformer? best = null; double bestLoss = double.PositiveInfinity, bestLr = double.NaN;
        foreach (var lr in options.ResolveCandidates())
        {
            var est = createEstimator();
            var o = est.Options;
            o.LearningRate = lr; o.MaxSteps = options.StepsPerCandidate; o.Seed = options.Seed; o.ValidationData = validationData;
            LearningRateSweepRow row;
            FinetuneTransformer? t = null;
            try
            {
                t = est.Fit(trainingData);
                double loss = t.TrainingHistory.FinalValidationLoss ?? double.NaN;
                double? metric = options.Metric?.Invoke(t, validationData);
                row = new LearningRateSweepRow(lr, loss, metric, null);
            }
            catch (FinetuneDivergedException e) { row = new LearningRateSweepRow(lr, double.NaN, null, e.Message); }
            rows.Add(row);
            progress?.Invoke(row);
            if (t != null && double.IsFinite(row.ValidationLoss) && row.ValidationLoss < bestLoss)
            {
                best?.Dispose();
                best = t; bestLoss = row.ValidationLoss; bestLr = lr;
            }
            else t?.Dispose();
        }
        if (best == null) throw new InvalidOperationException("every learning-rate candidate diverged: " + string.Join("; ", rows.Select(r => $"{r.LearningRate:G3}: {r.Error}")));
        // Under data parallelism every rank ran the same sweep on globally reduced losses; rank 0 alone writes the plot.
        if (options.PlotPath != null && Distributed.Communicator.World.IsRoot) Plot(rows, options.PlotPath, bestLr);
        return new LearningRateSweepResult { Rows = rows, BestLearningRate = bestLr, BestTransformer = best, PlotPath = options.PlotPath };
    }

    static void Plot(IReadOnlyList<LearningRateSweepRow> rows, string path, double bestLr)
    {
        var ok = rows.Where(r => double.IsFinite(r.ValidationLoss)).ToList();
        var plot = new ScottPlot.Plot();
        var s = plot.Add.Scatter(ok.Select(r => PlotConventions.LogPosition(r.LearningRate)).ToArray(), ok.Select(r => r.ValidationLoss).ToArray());
        s.LegendText = "validation loss";
        var b = ok.First(r => r.LearningRate == bestLr);
        var m = plot.Add.Marker(PlotConventions.LogPosition(b.LearningRate), b.ValidationLoss);
        m.LegendText = $"best lr {bestLr.ToString("G3", System.Globalization.CultureInfo.InvariantCulture)}";
        m.MarkerSize = 12;
        plot.Title("Learning-rate sweep");
        PlotConventions.LogLearningRateAxis(plot, rows.Select(r => r.LearningRate));
        plot.YLabel("validation loss");
        PlotConventions.LegendOutside(plot);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        plot.SavePng(path, 800, 500);
    }
}
