using ML.Finetune.Models;
using ML.Finetune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Engine;

/// <summary>
/// The bf16 compute path for frozen-base methods: base loaded with ModelLoadOptions.DType = BFloat16, trained
/// parameters float32, logits and loss float32. Tolerance: bf16 keeps 8 mantissa bits (relative rounding 2^-9 ≈ 0.2%
/// per op), so on the tiny fixture the CE loss must agree with float32 to 1% relative (documented in bench/README.md);
/// gradients of float32 trained parameters must arrive in float32 and agree in direction (cosine &gt; 0.99).
/// </summary>
public class Bf16PathTests
{
    const double LossRelTol = 0.01;

    static (CausalLM f32, CausalLM bf16) Load()
    {
        var dir = Fixtures.Model("tiny-gpt2");
        return (CausalLMFactory.LoadPretrained(dir), CausalLMFactory.LoadPretrained(dir, new ModelLoadOptions { DType = ScalarType.BFloat16 }));
    }

    static Tensor Ids(CausalLM m)
    {
        using var g = new Generator(7);
        return torch.randint(3, m.Config.VocabSize, [2, 12], generator: g, dtype: ScalarType.Int64);
    }

    static Tensor Loss(Tensor logits, Tensor ids, int skip = 0)
    {
        long v = logits.shape[2];
        var l = logits[.., skip.., ..];
        return nn.functional.cross_entropy(l[.., ..^1, ..].reshape(-1, v), ids[.., 1..].reshape(-1));
    }

    [Fact]
    public void Bf16BaseLossMatchesFloat32WithinTolerance()
    {
        using var scope = NewDisposeScope();
        var (f32, bf16) = Load();
        Assert.Equal(ScalarType.BFloat16, bf16.ComputeDType);
        var ids = Ids(f32);
        using var _ = torch.no_grad();
        var l32 = Loss(f32.Forward(new CausalLMInput { InputIds = ids }).Logits, ids).ToDouble();
        var o16 = bf16.Forward(new CausalLMInput { InputIds = ids }).Logits;
        Assert.Equal(ScalarType.Float32, o16.dtype);
        var l16 = Loss(o16, ids).ToDouble();
        Assert.True(Math.Abs(l16 - l32) <= LossRelTol * Math.Abs(l32), $"bf16 loss {l16} vs fp32 {l32}");
    }

    [Fact]
    public void Float32SoftPromptOverBf16BaseTrainsInFloat32()
    {
        using var scope = NewDisposeScope();
        var (f32, bf16) = Load();
        var ids = Ids(f32);
        int k = 4;
        double? l32 = null; Tensor? g32 = null;
        foreach (var m in new[] { f32, bf16 })
        {
            foreach (var p in m.parameters()) p.requires_grad = false;
            using var g = new Generator(3);
            var soft = torch.randn([k, m.Config.HiddenSize], generator: g).mul_(0.1).requires_grad_(true); // float32 master
            var emb = m.EmbedTokens(ids);
            // Mixed dtypes on purpose: the model casts float32 inputs_embeds to its compute dtype (Models/CausalLM.Prepare).
            var embeds = torch.cat([soft.unsqueeze(0).expand(ids.shape[0], -1, -1), emb.to_type(ScalarType.Float32)], 1);
            var loss = Loss(m.Forward(new CausalLMInput { InputsEmbeds = embeds }).Logits, ids, k);
            loss.backward();
            Assert.Equal(ScalarType.Float32, soft.grad!.dtype);
            if (l32 is null) { l32 = loss.ToDouble(); g32 = soft.grad!.clone(); continue; }
            Assert.True(Math.Abs(loss.ToDouble() - l32.Value) <= LossRelTol * l32.Value, $"bf16 {loss.ToDouble()} vs fp32 {l32}");
            double cos = nn.functional.cosine_similarity(soft.grad!.flatten(), g32!.flatten(), 0).ToDouble();
            Assert.True(cos > 0.99, $"gradient cosine {cos}");
        }
    }

    [Fact]
    public void Float32KvPrefixOverBf16BaseTrainsInFloat32()
    {
        using var scope = NewDisposeScope();
        var (f32, bf16) = Load();
        var ids = Ids(f32);
        int p = 3;
        double? l32 = null;
        foreach (var m in new[] { f32, bf16 })
        {
            foreach (var q in m.parameters()) q.requires_grad = false;
            var c = m.Config;
            using var g = new Generator(5);
            var keys = Enumerable.Range(0, c.NumLayers).Select(_ => torch.randn([c.NumHeads, p, c.HeadDim], generator: g).mul_(0.1).requires_grad_(true)).ToList();
            var values = Enumerable.Range(0, c.NumLayers).Select(_ => torch.randn([c.NumHeads, p, c.HeadDim], generator: g).mul_(0.1).requires_grad_(true)).ToList();
            using var cache = KVCache.FromPrefix(keys, values, (int)ids.shape[0]);
            var mask = torch.ones(ids.shape[0], p + ids.shape[1], dtype: ScalarType.Int64);
            var loss = Loss(m.Forward(new CausalLMInput { InputIds = ids, AttentionMask = mask, Cache = cache }).Logits, ids);
            loss.backward();
            Assert.All(keys.Concat(values), t => Assert.Equal(ScalarType.Float32, t.grad!.dtype));
            Assert.True(keys[0].grad!.abs().sum().ToDouble() > 0);
            if (l32 is null) { l32 = loss.ToDouble(); continue; }
            Assert.True(Math.Abs(loss.ToDouble() - l32.Value) <= LossRelTol * l32.Value, $"bf16 {loss.ToDouble()} vs fp32 {l32}");
        }
    }

    [Fact]
    public void MallocTuningIsIdempotentAndReportsWhy()
    {
        bool first = MallocTuning.ApplyForTraining();
        Assert.Equal(first, MallocTuning.ApplyForTraining());
        Assert.Equal(first, MallocTuning.IsApplied);
        if (OperatingSystem.IsLinux() && MallocTuning.EnabledByEnvironment) Assert.True(first, MallocTuning.SkipReason);
        if (!first) Assert.NotNull(MallocTuning.SkipReason);
    }
    // TorchCpuMath.TrySetFloat32MatmulBf16 is process-global; it is exercised by the bench (--matmul-probe), not here,
    // where parity tests in parallel classes would see reduced-precision matmuls.
}
