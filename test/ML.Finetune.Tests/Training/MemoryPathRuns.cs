using ML.Finetune.Adapters;
using ML.Finetune.Models;
using ML.Finetune.Tests.Families;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Training;

/// <summary>
/// What the exactness tests of the memory paths (chunked head loss, on-the-fly KL, activation checkpointing) share:
/// HF fixture models of several families, each method attached and moved off its initial point (so that LoRA's B,
/// the prefix and θ − θ_p are non-zero and every gradient is), a small right-padded batch, and gradient capture.
/// </summary>
public static class MemoryPathRuns
{
    /// <summary>GPT-2 (tied, Conv1D), Llama (untied head), Qwen2 (tied, q/k/v biases), Gemma 2 (final softcap,
    /// sandwich norms), Phi-3 (fused qkv and gate_up, untied), Qwen3 (q/k norms).</summary>
    public static readonly string[] Folders =
    [
        Fixtures.Model("tiny-gpt2"), Fixtures.Model("tiny-llama"), Fixtures.Model("tiny-qwen2"),
        ArchFixtures.Model("tiny-gemma2"), ArchFixtures.Model("tiny-phi3"), ArchFixtures.Model("tiny-qwen3"),
    ];

    /// <summary>"lora-head": LoRA on every linear and on lm_head (untied heads only).</summary>
    public static readonly string[] Methods = ["full", "lora", "lora-head", "prompt", "prefix"];

    public static TheoryData<string, string> All()
    {
        var d = new TheoryData<string, string>();
        foreach (var f in Folders)
            foreach (var m in Methods)
                if (m != "lora-head" || !CausalLMConfig.Load(f).TieWordEmbeddings) d.Add(Path.GetFileName(f), m);
        return d;
    }

    public static string Folder(string name) => Folders.Single(f => Path.GetFileName(f) == name);

    public static IFinetuneMethod Make(string method, double loraDropout = 0) => method switch
    {
        "full" => new FullFinetuneMethod(),
        "lora" => new LoraMethod(new LoraConfig { Rank = 4, Alpha = 8, Dropout = loraDropout, TargetModules = [LoraConfig.AllLinear] }),
        "lora-head" => new LoraMethod(new LoraConfig { Rank = 4, Alpha = 8, Dropout = loraDropout, TargetModulesRegex = @".*(proj|lm_head)" }),
        "prompt" => new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 3, InitRange = 0.5 }),
        "prefix" => new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 3, InitStd = 0.5 }),
        _ => throw new ArgumentException(method),
    };

    /// <summary>Loads the model, attaches the method and moves every trainable tensor by N(0, 0.02²) (seeded).</summary>
    public static (CausalLM Model, IFinetuneMethod Method) Create(string folder, string method, ScalarType dtype = ScalarType.Float32, bool nudge = true)
    {
        var model = CausalLMFactory.LoadPretrained(folder, new ModelLoadOptions { DType = dtype });
        var m = Make(method);
        m.Attach(model, 7);
        if (nudge) Nudge(m, 0.02);
        model.eval();
        return (model, m);
    }

    public static void Nudge(IFinetuneMethod method, double std)
    {
        using var gen = new Generator(99);
        using var _ = no_grad();
        foreach (var (_, p) in method.TrainableParameters)
        {
            using var r = randn(p.shape, generator: gen);
            p.add_(r.mul(std).to_type(p.dtype));
        }
    }

    /// <summary>Five prompt → completion examples of different lengths over ids 3..999 (right-padded to 9).</summary>
    public static List<EncodedExample> Examples(int seed = 5)
    {
        var r = new Random(seed);
        var list = new List<EncodedExample>();
        foreach (var (p, c) in new[] { (3, 3), (5, 4), (2, 2), (4, 5), (6, 2) })
        {
            var prompt = Enumerable.Range(0, p).Select(_ => (long)r.Next(3, 1000)).ToArray();
            var completion = Enumerable.Range(0, c).Select(_ => (long)r.Next(3, 1000)).ToArray();
            list.Add(new EncodedExample([.. prompt, .. completion], [.. prompt.Select(_ => -100L), .. completion]));
        }
        return list;
    }

    /// <summary>Reference texts (every position counts in the KL), of different lengths.</summary>
    public static List<long[]> Texts(int seed = 9)
    {
        var r = new Random(seed);
        return new[] { 7, 4, 6 }.Select(n => Enumerable.Range(0, n).Select(_ => (long)r.Next(3, 1000)).ToArray()).ToList();
    }

    public static TrainingBatch TextBatch(IReadOnlyList<long[]> texts) => FinetuneTrainer.Collate(texts.Select(t => new EncodedExample(t, t)).ToList(), 0);

    /// <summary>Runs <paramref name="loss"/>, backpropagates it and returns its value and a copy of every trainable gradient.</summary>
    public static (double Loss, Dictionary<string, Tensor> Grads) LossAndGrads(IFinetuneMethod method, Func<Tensor> loss)
    {
        foreach (var (_, p) in method.TrainableParameters) p.grad = null;
        var l = loss();
        l.backward();
        var grads = method.TrainableParameters.ToDictionary(p => p.Name, p => p.Parameter.grad is null ? zeros_like(p.Parameter) : p.Parameter.grad.detach().clone());
        return (l.to_type(ScalarType.Float64).item<double>(), grads);
    }

    /// <summary>Asserts every gradient agrees within atol + rtol·max|expected| (per tensor) and is not all zero.</summary>
    public static void SameGradients(Dictionary<string, Tensor> expected, Dictionary<string, Tensor> actual, double atol, double rtol, string what)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        bool anyNonZero = false;
        foreach (var (name, e) in expected)
        {
            var a = actual[name];
            double scale = e.abs().max().to_type(ScalarType.Float64).item<double>();
            anyNonZero |= scale > 0;
            double diff = Fixtures.MaxAbsDiff(a.to_type(ScalarType.Float32), e.to_type(ScalarType.Float32));
            Assert.True(diff <= atol + rtol * scale, $"{what}: gradient of {name} differs by {diff:E3} (max |g| {scale:E3})");
        }
        Assert.True(anyNonZero, $"{what}: every gradient is zero; the comparison would prove nothing");
    }
}
