using System.Diagnostics;
using ML.Finetune.Adapters;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

public sealed record BenchSettings(
    int Layers = 12, int Batch = 4, int Seq = 128, int Threads = 2, int Steps = 5, int Warmup = 3,
    int GenSteps = 5, int GenWarmup = 3, int GenPrompt = 16, int GenNew = 128, int GenBatch = 1,
    int LoraRank = 8, double LoraAlpha = 16, int VirtualTokens = 16, long Seed = 1234, bool FusedOptimizer = true,
    bool Checkpointing = false, bool FullLogits = false, int Completion = 0);

public sealed record BenchResult(
    string Impl, string Mode, string DType, double TokensPerSec, double MedianMs, double[] StepMs,
    double PeakRssMiB, double FaultsPerStep, long TrainableParams, double LastLoss, string Notes);

/// <summary>
/// One benchmark mode in this process. Training modes time a whole optimiser step (zero_grad, forward, fp32 loss
/// through the library's chunked head, or from full logits with FullLogits, backward, AdamW) on a [Batch, Seq] batch; tokens/s = Batch·Seq / median step time. Generation modes time one greedy
/// generation of GenNew tokens; tokens/s = GenBatch·GenNew / median time.
/// LoRA, prompt and prefix modes run the library's own methods (LoraMethod, PromptTuningMethod, PrefixTuningMethod).
/// Every training mode runs a library method (FullFinetuneMethod, LoraMethod, PromptTuningMethod, PrefixTuningMethod)
/// and the library's AdamW. bf16 path (by hand, TorchSharp has no autocast): base weights cast once to bf16; adapter
/// and prompt tensors stay float32 (cast differentiably to bf16 inside the forward); full finetuning trains the bf16
/// weights through the optimizer's float32 master copies; logits and the loss/softmax are float32.
/// </summary>
public static class Workloads
{
    public static readonly string[] AllModes = ["forward", "full", "lora", "lora-all", "prompt", "prefix", "gen-cache", "gen-nocache"];

    /// <summary>GPT-2 small; more than its 1,024 learned positions when a longer sequence is benchmarked.</summary>
    public static CausalLMConfig Gpt2Small(int layers, int positions = 1024) => new()
    {
        ModelType = "gpt2", VocabSize = 50257, HiddenSize = 768, NumLayers = layers, NumHeads = 12, NumKeyValueHeads = 12,
        HeadDim = 64, IntermediateSize = 3072, MaxPositionEmbeddings = Math.Max(1024, positions), NormEps = 1e-5, TieWordEmbeddings = true,
        HiddenAct = "gelu_new", BosTokenId = 50256, EosTokenIds = [50256],
    };

    public static BenchResult Run(string mode, string dtype, BenchSettings s)
    {
        torch.set_num_threads(s.Threads);
        torch.manual_seed(s.Seed);
        var dt = dtype == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;
        var cfg = Gpt2Small(s.Layers, s.Seq);
        var model = CausalLMFactory.CreateRandom(cfg, s.Seed, dt);
        ML.Finetune.Runtime.MallocTuning.ApplyForTraining();
        using var gen = new Generator((ulong)s.Seed);
        var ids = torch.randint(0, cfg.VocabSize, [s.Batch, s.Seq], generator: gen, dtype: ScalarType.Int64);
        bool isGen = mode.StartsWith("gen-");
        int warm = isGen ? s.GenWarmup : s.Warmup, steps = isGen ? s.GenSteps : s.Steps;
        double tokensPerRun = isGen ? (double)s.GenBatch * s.GenNew : (double)s.Batch * s.Seq;

        Func<double> step; long trainable = 0; string notes = "";
        switch (mode)
        {
            case "forward":
                model.eval();
                // BENCH_FORWARD_GRAD=1: run the forward with autograd enabled (diagnoses no_grad-only slow paths).
                bool grad = Environment.GetEnvironmentVariable("BENCH_FORWARD_GRAD") == "1";
                step = () => { using var _ = torch.set_grad_enabled(grad); using var sc = NewDisposeScope(); return model.Forward(new CausalLMInput { InputIds = ids }).Logits[0, 0, 0].ToSingle(); };
                if (grad) notes = "autograd enabled";
                break;
            case "gen-cache":
            case "gen-nocache":
            {
                model.eval();
                var prompt = torch.randint(0, cfg.VocabSize, [s.GenBatch, s.GenPrompt], generator: gen, dtype: ScalarType.Int64);
                bool cache = mode == "gen-cache";
                step = () => Greedy(model, prompt, s.GenNew, cache);
                notes = $"batch {s.GenBatch}, prompt {s.GenPrompt}, {s.GenNew} new";
                break;
            }
            default:
            {
                var t = new Trainer(model, mode, dt, s);
                trainable = t.TrainableCount;
                step = () => t.Step(ids);
                notes = t.Notes;
                break;
            }
        }

        for (int i = 0; i < warm; i++) step();
        GC.Collect();
        var times = new double[steps];
        double last = 0;
        long f0 = ProcStats.MinorFaults();
        for (int i = 0; i < steps; i++)
        {
            var sw = Stopwatch.StartNew();
            last = step();
            times[i] = sw.Elapsed.TotalMilliseconds;
        }
        long f1 = ProcStats.MinorFaults();
        double med = Median(times);
        return new BenchResult("ours", mode, dtype, tokensPerRun / (med / 1000.0), med, times, ProcStats.PeakRssMiB(),
            (f1 - f0) / (double)steps, trainable, last, notes);
    }

    public static double Median(double[] xs)
    {
        var a = xs.OrderBy(x => x).ToArray();
        return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
    }

    /// <summary>Greedy decoding of <paramref name="newTokens"/> tokens through the library's TextGenerator, with or
    /// without the KV cache; EOS is disabled so every run produces exactly newTokens tokens. Returns the last token id.</summary>
    static double Greedy(CausalLM model, Tensor prompt, int newTokens, bool useCache)
    {
        using var mask = torch.ones_like(prompt);
        var r = ML.Finetune.Generation.TextGenerator.Generate(model, prompt, mask,
            new ML.Finetune.Generation.GenerationOptions { MaxNewTokens = newTokens, UseCache = useCache, EosTokenIds = [] });
        if (r.NewTokens[0].Length != newTokens) throw new InvalidOperationException("generation stopped early");
        return r.NewTokens[0][^1];
    }
}

sealed class Trainer
{
    readonly CausalLM _model;
    readonly IFinetuneMethod _method; // the library's method: full, LoRA, prompt or prefix
    readonly FinetuneOptimizer _opt;  // the library's AdamW (fused CPU pass; float32 masters for bf16 weights)
    readonly bool _fullLogits;
    readonly int _completion;
    public long TrainableCount => _method.TrainableParameters.Sum(p => p.Parameter.numel());
    public string Notes { get; }

    public Trainer(CausalLM model, string mode, ScalarType dt, BenchSettings s)
    {
        _model = model;
        model.train();
        switch (mode)
        {
            case "full":
                _method = new FullFinetuneMethod();
                Notes = "library FullFinetuneMethod" + (dt == ScalarType.Float32 ? "" : ", bf16 weights + fp32 masters in the optimizer");
                break;
            case "lora":
            case "lora-all":
                _method = new LoraMethod(new LoraConfig
                {
                    Rank = s.LoraRank, Alpha = s.LoraAlpha,
                    TargetModules = mode == "lora" ? new[] { "c_attn" } : new[] { LoraConfig.AllLinear },
                });
                Notes = $"library LoraMethod r={s.LoraRank} a={s.LoraAlpha} on " + (mode == "lora" ? "c_attn" : "all linear");
                break;
            case "prompt":
                _method = new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = s.VirtualTokens });
                Notes = $"library PromptTuningMethod, {s.VirtualTokens} virtual tokens";
                break;
            case "prefix":
                _method = new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = s.VirtualTokens });
                Notes = $"library PrefixTuningMethod, {s.VirtualTokens} virtual tokens per layer";
                break;
            default: throw new ArgumentException($"unknown mode '{mode}' (modes: {string.Join(", ", Workloads.AllModes)})");
        }
        _method.Attach(model, s.Seed); // freezes the base for adapters; trained adapter tensors stay float32 on a bf16 base
        _opt = new ML.Finetune.Training.AdamW(_method.TrainableParameters, weightDecay: 0.0) { UseFusedCpuKernels = s.FusedOptimizer };
        Notes += s.FusedOptimizer ? ", fused AdamW" : ", tensor-op AdamW";
        model.GradientCheckpointing = s.Checkpointing;
        _fullLogits = s.FullLogits;
        _completion = s.Completion;
        if (s.Completion > 0) Notes += $", SFT-shaped: loss on the last {s.Completion} of {s.Seq} positions";
        Notes += (s.FullLogits ? ", loss from full logits" : ", chunked head loss") + (s.Checkpointing ? ", checkpointing" : "");
    }

    public double Step(Tensor ids)
    {
        using var scope = NewDisposeScope();
        _opt.ZeroGrad();
        long b = ids.shape[0], t = ids.shape[1];
        using var attention = torch.ones(b, t, dtype: ScalarType.Int64);
        // Every next token is a target, or (Completion > 0, SFT-shaped) the last Completion positions only; the
        // library's chunked head (default) or full [B, T, V] logits (--full-logits).
        var labels = _completion > 0 && _completion < t
            ? torch.cat([torch.full(b, t - _completion, -100L, dtype: ScalarType.Int64), ids.narrow(1, t - _completion, _completion)], 1)
            : ids;
        var loss = _fullLogits
            ? FinetuneObjective.CrossEntropy(_method.Logits(_model, ids, attention), labels)
            : FinetuneObjective.CrossEntropy(_model, _method.HiddenStates(_model, ids, attention), labels);
        loss.backward();
        _opt.Step(1e-4);
        return loss.ToDouble();
    }
}
