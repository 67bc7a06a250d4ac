using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using ML.Finetune.Adapters;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;
using ML.Finetune.Transformers;

namespace ML.Finetune.Estimators;

/// <summary>Options of <see cref="PromptTuneEstimator"/>: k soft-prompt vectors at the input layer; the base model is frozen.</summary>
public sealed class PromptTuneOptions : FinetuneOptions
{
    public PromptTuneOptions() { LearningRate = 3e-2; }
    /// <summary>k, the number of virtual tokens.</summary>
    public int NumVirtualTokens = 8;
    public PromptTuningInit Init = PromptTuningInit.Random;
    /// <summary>ε of the Random init U(−ε, ε).</summary>
    public double InitRange = 0.5;
    /// <summary>Text for the Text init, tokenised with the base model's tokenizer (no BOS); longer than k tokens → its first k.</summary>
    public string? InitText;
}

/// <summary>Prompt tuning (PEFT "PROMPT_TUNING"). The saved model holds the k vectors and a reference to the base model.</summary>
public sealed class PromptTuneEstimator : FinetuneEstimatorBase
{
    public PromptTuneEstimator(IHostEnvironment env, PromptTuneOptions options) : base(env, options) { }

    protected override IFinetuneMethod CreateMethod()
    {
        var o = (PromptTuneOptions)Options;
        IReadOnlyList<long>? ids = null;
        if (o.Init == PromptTuningInit.Text)
        {
            if (string.IsNullOrEmpty(o.InitText)) throw new ArgumentException("Init = Text needs InitText.", nameof(o.InitText));
            ids = CausalLMTokenizer.FromFolder(o.BaseModelPath).Encode(o.InitText).Select(i => (long)i).ToArray();
        }
        return new PromptTuningMethod(new PromptTuningOptions
        {
            NumVirtualTokens = o.NumVirtualTokens, Init = o.Init, InitRange = o.InitRange, InitTokenIds = ids, InitText = o.InitText,
        });
    }
}

/// <summary>Options of <see cref="PrefixTuneEstimator"/>: a learned key/value prefix at every layer; the base model is frozen.</summary>
public sealed class PrefixTuneOptions : FinetuneOptions
{
    public PrefixTuneOptions() { LearningRate = 1e-2; }
    /// <summary>P, the prefix length.</summary>
    public int NumVirtualTokens = 8;
    /// <summary>Train through the MLP reparameterisation; it is folded into the prefix table after training.</summary>
    public bool PrefixProjection = false;
    public int EncoderHiddenSize = 512;
    /// <summary>σ of the N(0, σ²) init of the prefix table (or the MLP's embedding).</summary>
    public double InitStd = 1.0;
}

/// <summary>
/// Prefix tuning (PEFT "PREFIX_TUNING"). With <see cref="PrefixTuneOptions.PrefixProjection"/> the MLP is folded away
/// after training, so the saved model and inference use only the resulting prefixes.
/// </summary>
public sealed class PrefixTuneEstimator : FinetuneEstimatorBase, IEstimator<FinetuneTransformer>
{
    public PrefixTuneEstimator(IHostEnvironment env, PrefixTuneOptions options) : base(env, options) { }

    protected override IFinetuneMethod CreateMethod()
    {
        var o = (PrefixTuneOptions)Options;
        return new PrefixTuningMethod(new PrefixTuningOptions
        {
            NumVirtualTokens = o.NumVirtualTokens, PrefixProjection = o.PrefixProjection, EncoderHiddenSize = o.EncoderHiddenSize, InitStd = o.InitStd,
        });
    }

    /// <summary>Trains, then folds the projection MLP (if any) into the prefix table.</summary>
    public new FinetuneTransformer Fit(IDataView input)
    {
        var t = base.Fit(input);
        if (t.Method is PrefixTuningMethod px && px.HasProjection)
        {
            px.FoldProjection();
            foreach (var (_, p) in px.TrainableParameters) p.requires_grad = false;
        }
        return t;
    }
}
