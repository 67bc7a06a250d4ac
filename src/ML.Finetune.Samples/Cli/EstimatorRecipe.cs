using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Microsoft.ML;
using ML.Finetune.Estimators;
using ML.Finetune.Models;
using ML.Finetune.Training;

namespace ML.Finetune.Samples.Cli;

/// <summary>
/// How `finetune` and `sweep` configure the library's estimators: batch 16, AdamW, cosine schedule after a linear warmup,
/// gradient clipping at norm 1 (the options' default), one libtorch thread, greedy generation of 8 tokens in the saved model
/// (64 for conversations and texts, whose replies are longer), the data format detected from the file.
/// </summary>
public sealed record EstimatorRecipe(string Model, string Method, int Steps, int Warmup, int Seed, int Rank, int VirtualTokens, bool Projection, int MaxLength,
    FinetuneDType DType = FinetuneDType.Auto, bool Packing = false, bool AllTokens = false, string[]? Targets = null,
    bool GradientCheckpointing = false)
{
    public const int BatchSize = 16;

    public static double DefaultLearningRate(string method) => method switch { "lora" => 3e-3, "prompt" => 3e-2, "prefix" => 1e-2, _ => 3e-4 };

    /// <summary>
    /// The recipe of a command's options (method-specific options given for another method are usage errors, checked
    /// first) and the --model's config.
    /// </summary>
    public static EstimatorRecipe From(ParseResult a, out CausalLMConfig config)
    {
        string method = a.GetValue<string>("--method")!;
        bool Given(string name) => a.GetResult(name) is OptionResult { Implicit: false };
        if (a.GetValue<bool>("--projection") && method != "prefix") throw new CliException("option '--projection' applies to --method prefix only");
        if (Given("--virtual-tokens") && method is not ("prompt" or "prefix")) throw new CliException("option '--virtual-tokens' applies to --method prompt or prefix only");
        if (Given("--rank") && method != "lora") throw new CliException("option '--rank' applies to --method lora only");
        if (Given("--targets") && method != "lora") throw new CliException("option '--targets' applies to --method lora only");
        var targets = a.GetValue<string>("--targets") is { } t ? CliDefinition.SplitList(t).ToArray() : null;
        if (targets is { Length: 0 }) throw new CliException("option '--targets' is empty");
        int steps = a.GetValue<int>("--steps");
        config = CausalLMConfig.Load(a.GetValue<string>("--model")!);
        return new EstimatorRecipe(a.GetValue<string>("--model")!, method, steps, a.GetValue<int?>("--warmup") ?? Math.Max(1, steps / 10),
            a.GetValue<int>("--seed"), a.GetValue<int>("--rank"), a.GetValue<int>("--virtual-tokens"), a.GetValue<bool>("--projection"),
            DataChecks.MaxLength(a, config), a.GetValue<string>("--dtype") switch
            {
                "float32" => FinetuneDType.Float32, "bfloat16" => FinetuneDType.BFloat16, _ => FinetuneDType.Auto,
            }, a.GetValue<bool>("--packing"), a.GetValue<bool>("--all-tokens"), targets, a.GetValue<bool>("--gradient-checkpointing"));
    }

    /// <summary>The settings that decide the result (a resumed run must match them), as text.</summary>
    public SortedDictionary<string, string> Describe(double learningRate)
    {
        static string Inv(int v) => v.ToString(CultureInfo.InvariantCulture);
        var d = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["model"] = RealPath.Of(Model), ["method"] = Method, ["steps"] = Inv(Steps), ["lr"] = learningRate.ToString("R", CultureInfo.InvariantCulture),
            ["warmup"] = Inv(Warmup), ["seed"] = Inv(Seed), ["max-length"] = Inv(MaxLength), ["batch"] = Inv(BatchSize),
            ["dtype"] = DType.ToString(),
        };
        if (Method == "lora") d["rank"] = Inv(Rank);
        if (Targets != null) d["targets"] = string.Join(",", Targets);
        if (Packing) d["packing"] = "yes";
        if (AllTokens) d["all-tokens"] = "yes";
        if (Method is "prompt" or "prefix") d["virtual-tokens"] = Inv(VirtualTokens);
        if (Method == "prefix") d["projection"] = Projection ? "yes" : "no";
        return d;
    }

    /// <summary>The estimator; <paramref name="format"/> (the data file's) sets the saved model's generation length.</summary>
    public FinetuneEstimatorBase Create(MLContext ml, double learningRate, string? checkpointFolder = null, int checkpointEvery = 0,
        FinetuneDataFormat format = FinetuneDataFormat.PromptCompletion)
    {
        T Fill<T>(T o) where T : FinetuneOptions
        {
            o.BaseModelPath = Path.GetFullPath(Model); o.MaxSteps = Steps; o.LearningRate = learningRate; o.BatchSize = BatchSize;
            o.WarmupSteps = Warmup; o.Schedule = LearningRateScheduleKind.Cosine; o.Seed = Seed; o.NumberOfThreads = 1;
            o.MaxSequenceLength = MaxLength;
            o.Generation = new FinetuneGenerationOptions { MaxNewTokens = format == FinetuneDataFormat.PromptCompletion ? 8 : 64 };
            o.CheckpointFolder = checkpointFolder; o.CheckpointEveryNSteps = checkpointEvery; o.DType = DType;
            o.Packing = Packing; o.AssistantOnlyLoss = !AllTokens; o.GradientCheckpointing = GradientCheckpointing;
            return o;
        }
        return Method switch
        {
            "lora" => ml.Transforms.LoraFinetune(Fill(new LoraFinetuneOptions { Rank = Rank, Alpha = 2 * Rank, TargetModules = Targets })),
            "prompt" => ml.Transforms.PromptTune(Fill(new PromptTuneOptions { NumVirtualTokens = VirtualTokens })),
            "prefix" => ml.Transforms.PrefixTune(Fill(new PrefixTuneOptions { NumVirtualTokens = VirtualTokens, PrefixProjection = Projection })),
            _ => ml.Transforms.Finetune(Fill(new FullFinetuneOptions())),
        };
    }
}
