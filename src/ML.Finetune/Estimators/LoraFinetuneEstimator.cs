using Microsoft.ML;
using Microsoft.ML.Runtime;
using ML.Finetune.Adapters;
using ML.Finetune.Training;

namespace ML.Finetune.Estimators;

/// <summary>
/// Options of LoRA finetuning (see <see cref="LoraConfig"/>): the base model is frozen and low-rank adapters train,
/// so the saved ML.NET model holds only the adapters (plus a reference to <see cref="FinetuneOptions.BaseModelPath"/>).
/// </summary>
public sealed class LoraFinetuneOptions : FinetuneOptions
{
    public LoraFinetuneOptions() { LearningRate = 1e-4; }

    /// <summary>The rank r.</summary>
    public int Rank = 8;
    /// <summary>α; updates are scaled by α/r (α/√r with <see cref="UseRsLora"/>).</summary>
    public double Alpha = 16;
    /// <summary>Dropout on the adapter input while training.</summary>
    public double Dropout = 0.0;
    /// <summary>Module names (PEFT suffix rule), or ["all-linear"]; null = the architecture's PEFT default.</summary>
    public string[]? TargetModules;
    /// <summary>A regex that must match a whole module path; overrides <see cref="TargetModules"/>.</summary>
    public string? TargetModulesRegex;
    public bool UseRsLora = false;
    public LoraInit Init = LoraInit.Default;
    /// <summary>Only adapt these layer indices (null = all).</summary>
    public int[]? LayersToTransform;
    /// <summary>A PEFT adapter folder to start from instead of random A / zero B (keys and shapes must fit).</summary>
    public string? InitialAdapterPath;

    public LoraConfig ToLoraConfig() => new()
    {
        Rank = Rank, Alpha = Alpha, Dropout = Dropout, TargetModules = TargetModules, TargetModulesRegex = TargetModulesRegex,
        UseRsLora = UseRsLora, Init = Init, LayersToTransform = LayersToTransform,
    };
}

/// <summary>LoRA finetuning as an ML.NET estimator (<c>mlContext.Transforms.LoraFinetune(options)</c>).</summary>
public sealed class LoraFinetuneEstimator : FinetuneEstimatorBase
{
    readonly LoraFinetuneOptions _lora;

    public LoraFinetuneEstimator(IHostEnvironment env, LoraFinetuneOptions options) : base(env, options)
    {
        _lora = options;
        options.ToLoraConfig().Validate(); // fail at construction for bad ranks / settings
    }

    protected override IFinetuneMethod CreateMethod() =>
        new LoraMethod(_lora.ToLoraConfig()) { InitialAdapterFolder = _lora.InitialAdapterPath };
}
