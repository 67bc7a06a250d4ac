using ML.Finetune.Models;
using ML.Finetune.Adapters;
using TorchSharp;
using ML.Finetune.Training;

namespace ML.Finetune.Samples.Experiment;

/// <summary>What every method gets: the model to train (θ_p or θ_0, freshly loaded), a frozen copy of its starting weights (the L2/KL reference), the data.</summary>
public sealed record MethodContext(
    CausalLM Model,
    CausalLM Start,
    LmText Text,
    IReadOnlyList<TokenSequence> TrainData,
    IReadOnlyList<TokenSequence> PretrainingText,
    int Steps,
    double LearningRate,
    long Seed,
    Action<TrainingProgress>? Progress,
    CancellationToken Cancel = default);

/// <summary>Distance = sqrt of the method's own DistanceFromPretrainedSquared (LoRA: the exact weight change (α/r)·B·A).</summary>
public sealed record MethodOutcome(IReadOnlyList<TrainingRecord> History, long TrainableParameters, double Distance)
{
    /// <summary>
    /// The trained method, kept for methods whose effect is not inside model.Forward (prompt/prefix): evaluation generates
    /// and computes logits through it. The caller disposes it after evaluation.
    /// </summary>
    public IFinetuneMethod? Method { get; init; }
}

/// <summary>One finetuning method of the main job. DefaultLearningRate is the one used in the comparison table.</summary>
public sealed record FinetuneMethod(string Name, string Description, double DefaultLearningRate, Func<MethodContext, MethodOutcome> Run);

/// <summary>
/// The methods the main job compares. Adding a method is one line here. Only methods with a real implementation
/// are listed: every method the library has is here.
/// </summary>
public static class FinetuneMethods
{
    public static readonly IReadOnlyList<FinetuneMethod> All =
    [
        new("full", "full finetuning, CE on completion tokens", 3e-4, c => Full(c, 0, 0)),
        new("full+l2", "full finetuning + β‖θ−θ_p‖², β=0.01", 3e-4, c => Full(c, l2: 0.01, kl: 0)),
        new("full+kl", "full finetuning + λ·KL(p_θp‖p_θ) on pretraining text, λ=1", 3e-4, c => Full(c, l2: 0, kl: 1.0)),
        new("prompt", "prompt tuning (soft prompt, base frozen)", 3e-2, c => Train(c, new PromptTuningMethod(), 0, 0, keep: true)),
        new("prefix", "prefix tuning (per-layer KV prefix, base frozen)", 3e-2, c => Train(c, new PrefixTuningMethod(), 0, 0, keep: true)),
        new("lora", "LoRA r=8, α=16 on the default target modules (base frozen)", 3e-3, c => Train(c, new LoraMethod(new LoraConfig { Rank = 8, Alpha = 16 }), 0, 0)),
    ];

    public static FinetuneMethod Get(string name) =>
        All.FirstOrDefault(m => m.Name == name) ?? throw new ArgumentException($"unknown method '{name}' (available: {string.Join(", ", All.Select(m => m.Name))})");

    /// <summary>The library's loop (FinetuneTrainer) with FullFinetuneMethod; L2 and KL pull towards the weights at Attach.</summary>
    static MethodOutcome Full(MethodContext c, double l2, double kl)
    {
        using var method = new FullFinetuneMethod();
        return Train(c, method, l2, kl);
    }

    static MethodOutcome Train(MethodContext c, IFinetuneMethod method, double l2, double kl, bool keep = false)
    {
        method.Attach(c.Model, c.Seed);
        var trainer = new FinetuneTrainer(new TrainerOptions
        {
            LearningRate = c.LearningRate, MaxSteps = c.Steps, BatchSize = 16, Schedule = LearningRateScheduleKind.Cosine,
            WarmupSteps = Math.Max(1, c.Steps / 10), GradientClipNorm = 1.0, L2Penalty = l2, L2Squared = true, KlPenalty = kl, Seed = c.Seed,
        }, c.Text.Pad);
        trainer.Progress = c.Progress;
        trainer.CheckAlive = c.Cancel.ThrowIfCancellationRequested;
        var history = trainer.Train(c.Model, method, c.TrainData.Select(LmText.ToExample).ToList(), null,
            kl > 0 ? c.PretrainingText.Select(t => t.Ids.Select(i => (long)i).ToArray()).ToList() : null);
        double distance;
        using (TorchSharp.torch.no_grad()) using (var d = method.DistanceFromPretrainedSquared()) distance = Math.Sqrt(Math.Max(0, d.ToDouble()));
        return new MethodOutcome(history.Records,
            method.TrainableParameters.Sum(p => p.Parameter.numel()), distance)
        {
            Method = keep ? method : null,
        };
    }
}
