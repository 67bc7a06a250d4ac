using Microsoft.ML.Runtime;
using ML.Finetune.Persistence;
using ML.Finetune.Training;

namespace ML.Finetune.Estimators;

/// <summary>
/// Fit's progress, as ML.NET trainers report it: a progress channel (header: metrics Loss and Validation Loss, unit
/// steps) whose fill callback gives the latest step, loss and total to any host that polls it, a checkpoint entry on
/// the first and last step, every 10th step and every validation, and the same as an Info line in the ML.NET log.
/// </summary>
internal sealed class FitProgress : IDisposable
{
    private readonly IHost _host;
    private readonly IProgressChannel _channel;
    private volatile TrainingProgress? _latest;

    public FitProgress(IHost host, string methodName)
    {
        _host = host;
        _channel = host.StartProgressChannel($"Finetuning ({methodName})");
        _channel.SetHeader(new ProgressHeader(new[] { "Loss", "Validation Loss" }, new[] { "steps" }), Fill);
    }

    // Called by the host on its own thread: reads one immutable record.
    private void Fill(IProgressEntry entry)
    {
        if (_latest is not { } p) return;
        entry.SetProgress(0, p.Record.Step + 1, p.TotalSteps);
        entry.SetMetric(0, p.Record.TrainLoss);
        if (!double.IsNaN(p.Record.ValLoss)) entry.SetMetric(1, p.Record.ValLoss);
    }

    public void Report(TrainingProgress p)
    {
        _latest = p;
        var r = p.Record;
        bool validated = !double.IsNaN(r.ValLoss);
        if (r.Step != 0 && (r.Step + 1) % 10 != 0 && r.Step + 1 != p.TotalSteps && !validated) return;
        HostAccess.Info(_host, $"step {r.Step + 1}/{p.TotalSteps}: loss {r.TrainLoss:G5} (ce {r.CrossEntropy:G5}, kl {r.KL:G4}), " +
            $"‖θ−θp‖ {r.Distance:G4}, lr {r.LearningRate:G3}{(validated ? $", val {r.ValLoss:G5}" : "")}");
        _channel.Checkpoint(r.TrainLoss, validated ? r.ValLoss : null, r.Step + 1, p.TotalSteps);
    }

    public void Dispose() => _channel.Dispose();
}
