using Microsoft.ML;
using ML.Finetune.Estimators;
using ML.Finetune.Evaluation;
using ML.Finetune.Persistence;

namespace ML.Finetune;

/// <summary>Entry points: <c>mlContext.Transforms.Finetune(options)</c> and <c>mlContext.Finetune().Evaluate(...)</c>.</summary>
public static class FinetuneCatalog
{
    /// <summary>Full finetuning of a pretrained causal LM on (prompt, completion) pairs.</summary>
    public static FullFinetuneEstimator Finetune(this TransformsCatalog catalog, FullFinetuneOptions options) =>
        new(HostAccess.GetEnvironment(catalog), options);

    /// <summary>
    /// LoRA finetuning: the base model is frozen and low-rank adapters on the targeted projections train. The saved
    /// model holds the adapters and a reference to the base model folder.
    /// </summary>
    public static LoraFinetuneEstimator LoraFinetune(this TransformsCatalog catalog, LoraFinetuneOptions options) =>
        new(HostAccess.GetEnvironment(catalog), options);

    /// <summary>Prompt tuning: k learned soft-prompt vectors in front of the token embeddings; the base model is frozen.</summary>
    public static PromptTuneEstimator PromptTune(this TransformsCatalog catalog, PromptTuneOptions options) =>
        new(HostAccess.GetEnvironment(catalog), options);

    /// <summary>Prefix tuning: a learned key/value prefix at every layer; the base model is frozen.</summary>
    public static PrefixTuneEstimator PrefixTune(this TransformsCatalog catalog, PrefixTuneOptions options) =>
        new(HostAccess.GetEnvironment(catalog), options);

    /// <summary>Finetuning operations that are not transforms (evaluation).</summary>
    public static FinetuneOperations Finetune(this MLContext mlContext) => new(mlContext);
}
