using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests;

/// <summary>
/// The fused attention kernel (torch scaled_dot_product_attention, the default) against the written-out eager
/// attention, on the HF fixture models: unpadded (causal without a mask), right- and left-padded (additive mask),
/// and decoding with a KV cache; logits and training gradients.
/// </summary>
public class AttentionPathTests
{
    static CausalLMOutput Run(CausalLM m, bool fused, Func<CausalLM, CausalLMOutput> f)
    {
        Attention.UseFusedKernel = fused;
        try { return f(m); }
        finally { Attention.UseFusedKernel = true; }
    }

    static Tensor Ids(CausalLM m, int b, int t)
    {
        using var g = new Generator(21);
        return torch.randint(3, m.Config.VocabSize, [b, t], generator: g, dtype: ScalarType.Int64);
    }

    [Theory]
    [InlineData("tiny-gpt2")]
    [InlineData("tiny-llama")]
    [InlineData("tiny-qwen2")]
    public void FusedEqualsEager_Unpadded_Padded_AndCached(string name)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model(name));
        using var _ = torch.no_grad();
        var ids = Ids(m, 3, 10);
        var full = torch.ones_like(ids);
        var right = full.clone(); right[0, 7..] = 0; right[2, 4..] = 0;
        var left = full.clone(); left[0, ..3] = 0; left[1, ..1] = 0;
        foreach (var (mask, what) in new[] { (full, "unpadded"), (right, "right-padded"), (left, "left-padded") })
        {
            var a = Run(m, true, x => x.Forward(new CausalLMInput { InputIds = ids, AttentionMask = mask })).Logits;
            var b = Run(m, false, x => x.Forward(new CausalLMInput { InputIds = ids, AttentionMask = mask })).Logits;
            var valid = mask.unsqueeze(-1).to_type(a.dtype); // padded query rows are don't-care
            double diff = Fixtures.MaxAbsDiff(a.mul(valid), b.mul(valid));
            Assert.True(diff < 1e-5, $"{name} {what}: {diff}");
        }
        // Prefill 6 tokens, then decode 4 one at a time through the cache.
        Tensor Decode(bool fused)
        {
            using var cache = m.NewCache();
            var outs = new List<Tensor> { Run(m, fused, x => x.Forward(new CausalLMInput { InputIds = ids[.., ..6], Cache = cache })).Logits };
            for (int i = 6; i < 10; i++)
                outs.Add(Run(m, fused, x => x.Forward(new CausalLMInput { InputIds = ids[.., i..(i + 1)], Cache = cache })).Logits);
            return torch.cat(outs, 1);
        }
        var cachedFused = Decode(true);
        Assert.True(Fixtures.MaxAbsDiff(cachedFused, Decode(false)) < 1e-5, $"{name} cached");
        var whole = Run(m, true, x => x.Forward(new CausalLMInput { InputIds = ids })).Logits;
        Assert.True(Fixtures.MaxAbsDiff(cachedFused, whole) < 1e-5, $"{name} cached vs whole");
    }

    [Fact]
    public void FusedAndEagerGiveTheSameTrainingGradients()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        m.train();
        var ids = Ids(m, 2, 12);
        var grads = new List<Dictionary<string, Tensor>>();
        foreach (bool fused in new[] { true, false })
        {
            foreach (var p in m.parameters()) p.grad = null;
            var logits = Run(m, fused, x => x.Forward(new CausalLMInput { InputIds = ids })).Logits;
            ML.Finetune.Training.FinetuneObjective.CrossEntropy(logits, ids).backward();
            grads.Add(m.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone()));
        }
        foreach (var (n, g) in grads[0])
            Assert.True(Fixtures.MaxAbsDiff(g, grads[1][n]) < 1e-5, $"gradient of {n}");
    }

    [Fact]
    public void LongBf16AttentionTakesTheFusedKernel_AndAgreesWithEager()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(4);
        long s = Attention.Bf16FusedMinKeys + 37;
        Tensor R() => torch.randn([1, 2, s, 16], generator: g).to_type(ScalarType.BFloat16);
        var (q, k, v) = (R(), R(), R());
        var fused = Attention.Compute(q, k, v, null, gpt2Scaling: false, 0, false);
        Attention.UseFusedKernel = false;
        Tensor eager;
        try { eager = Attention.Compute(q, k, v, null, gpt2Scaling: false, 0, false); }
        finally { Attention.UseFusedKernel = true; }
        // The masks agree too: the last query sees every key, the first only itself (so its output is v[0]).
        Assert.True(Fixtures.MaxAbsDiff(fused.to_type(ScalarType.Float32), eager.to_type(ScalarType.Float32)) < 3e-2);
        Assert.True(Fixtures.MaxAbsDiff(fused[.., .., 0].to_type(ScalarType.Float32), v[.., .., 0].to_type(ScalarType.Float32)) < 1e-2);
        Assert.Null(Attention.MaskFor(torch.ones(1, s, dtype: ScalarType.Int64), 0, s, ScalarType.BFloat16));
        Assert.NotNull(Attention.MaskFor(torch.ones(1, 128, dtype: ScalarType.Int64), 0, 128, ScalarType.BFloat16)); // short bf16: eager, masked
    }
}
