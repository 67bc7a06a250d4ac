using ML.Finetune.Generation;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Families;

/// <summary>
/// Sliding windows where a config turns them on outside Gemma: HF references made by FixturesArch/extra/generate_extra.py
/// (Mistral sliding_window on every layer, Qwen2 use_sliding_window from max_window_layers, Phi-3 sliding_window with
/// LongRoPE and partial rotary), plus invariants: a window covering the sequence is no window, the windowed KV cache
/// equals recomputation, and the cache keeps only what the window can still reach.
/// </summary>
public class SlidingWindowTests
{
    public static TheoryData<string> Models => new() { "tiny-mistral-sw", "tiny-qwen2-sw", "tiny-phi3-longrope" };
    const double Atol = 1e-5;

    static void Close(Tensor a, Tensor b, double tol, string what)
    {
        double d = Fixtures.MaxAbsDiff(a, b);
        Assert.True(d < tol, $"{what}: max abs diff {d:E2}");
    }

    [Theory, MemberData(nameof(Models))]
    public void ForwardAndGreedy_MatchHF(string name)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(ArchFixtures.Extra(name));
        Assert.NotNull(m.Config.SlidingWindow);
        var ids = ArchFixtures.Input("input_ids_right");
        var logits = m.Forward(new CausalLMInput { InputIds = ids, AttentionMask = ArchFixtures.Input("attention_mask_right") }).Logits;
        Close(logits, ArchFixtures.ExtraRef(name, "logits_right"), Atol, $"{name} logits");
        Close(ParityTests.NextTokenLogprobs(logits, ids), ArchFixtures.ExtraRef(name, "next_token_logprobs_right"), Atol, $"{name} logprobs");
        Close(ParityTests.HfLoss(logits, ArchFixtures.Input("labels_right")), ArchFixtures.ExtraRef(name, "loss_right"), Atol, $"{name} loss");
        var maskL = ArchFixtures.Input("attention_mask_left");
        var left = m.Forward(new CausalLMInput { InputIds = ArchFixtures.Input("input_ids_left"), AttentionMask = maskL, PositionIds = ArchFixtures.Input("position_ids_left") }).Logits;
        var valid = maskL.to_type(ScalarType.Bool);
        Close(left[valid], ArchFixtures.ExtraRef(name, "logits_left")[valid], Atol, $"{name} left logits");

        // HF's no-cache argmax loop, and HF generate with its KV cache. LongRoPE: once the sequence passes
        // original_max_position_embeddings (8) every key is rotated with the long factors; Phi-3's generate means to
        // recompute its cache there, but in transformers 5.12 it then feeds the new token alone, without any past
        // (extra/README.md), so its cached ids are not a reference: ours, cached or not, follow the no-cache loop.
        var prompt = ArchFixtures.Input("generate_prompt_ids");
        string cachedRef = m.Config.Rope.Type == "longrope" ? "greedy_ids_nocache" : "generate_greedy_ids";
        foreach (var (cache, refName) in new[] { (true, cachedRef), (false, "greedy_ids_nocache") })
        {
            var expected = ArchFixtures.ExtraRef(name, refName)[0].narrow(0, prompt.shape[1], 8).data<long>().ToArray();
            var r = TextGenerator.Generate(m, prompt, torch.ones_like(prompt), new GenerationOptions { MaxNewTokens = 8, UseCache = cache, EosTokenIds = [] });
            Assert.Equal(expected, r.NewTokens[0]);
        }
    }

    /// <summary>A window of at least the sequence length is exactly no window (closest check for any family's switch).</summary>
    [Theory]
    [InlineData("tiny-mistral-sw")]
    [InlineData("tiny-phi3-longrope")]
    public void WindowCoveringTheSequence_EqualsNoWindow(string name)
    {
        using var scope = NewDisposeScope();
        var cfg = CausalLMConfig.Load(ArchFixtures.Extra(name));
        using var windowed = CausalLMFactory.LoadPretrained(ArchFixtures.Extra(name));
        var input = new CausalLMInput { InputIds = ArchFixtures.Input("input_ids_right"), AttentionMask = ArchFixtures.Input("attention_mask_right") };
        var small = windowed.Forward(input).Logits;
        Tensor With(int? window)
        {
            using var m = CausalLMFactory.Create(cfg with { SlidingWindow = window, LayerTypes = null });
            using (no_grad()) foreach (var (n, p) in windowed.named_parameters()) m.get_parameter(n)!.copy_(p);
            return m.Forward(input).Logits;
        }
        var none = With(null);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(With(12), none));
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(With(1000), none));
        Assert.True(Fixtures.MaxAbsDiff(small, none) > 0.1, "the fixture's window must matter");
    }

    /// <summary>Switched off, each family's window switch reproduces that family's plain fixture exactly.</summary>
    [Fact]
    public void WindowSwitchedOff_ReproducesThePlainFamilyFixtures()
    {
        using var scope = NewDisposeScope();
        foreach (var (name, rewrite) in new (string, Func<string, string>)[]
        {
            ("tiny-llama", j => j.Replace("\"model_type\": \"llama\"", "\"model_type\": \"mistral\"").Replace("\"attention_bias\": false,", "\"sliding_window\": null,")),
            ("tiny-qwen2", j => j.Replace("\"use_sliding_window\": false", "\"use_sliding_window\": true").Replace("\"sliding_window\": null", "\"sliding_window\": 4096")
                .Replace("\"full_attention\"", "\"sliding_attention\"")),
        })
        {
            var dir = Fixtures.TempDir();
            foreach (var f in Directory.GetFiles(Fixtures.Model(name))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            var json = File.ReadAllText(Path.Combine(dir, "config.json"));
            var changed = rewrite(json);
            Assert.NotEqual(json, changed);
            File.WriteAllText(Path.Combine(dir, "config.json"), changed);
            using var m = CausalLMFactory.LoadPretrained(dir);
            var logits = m.Forward(new CausalLMInput { InputIds = Fixtures.Input("input_ids_right"), AttentionMask = Fixtures.Input("attention_mask_right") }).Logits;
            Assert.True(Fixtures.MaxAbsDiff(logits, Fixtures.Ref(name, "logits_right")) < Atol, name);
        }
    }

    /// <summary>Left-padded batch generation with windows shorter than the prompts: cached (trimmed cache) = recomputed.</summary>
    [Theory]
    [InlineData("tiny-gemma2")]
    [InlineData("tiny-gemma3")]
    public void CachedGeneration_EqualsUncached_WithWindowShorterThanTheSequence(string name)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(ArchFixtures.Model(name));
        Assert.Equal(4, m.Config.SlidingWindow);
        var prompts = new List<long[]> { new long[] { 759, 958, 726, 452, 166, 112, 554, 31, 8 }, new long[] { 17, 400, 23, 99, 5 } };
        GenerationResult Run(bool cache) => TextGenerator.Generate(m, prompts, new GenerationOptions { MaxNewTokens = 10, UseCache = cache, OutputLogits = true, EosTokenIds = [] });
        var a = Run(true);
        var b = Run(false);
        Assert.Equal(b.NewTokens, a.NewTokens);
        for (int s = 0; s < a.StepLogits!.Count; s++) Close(a.StepLogits[s], b.StepLogits![s], Atol, $"step {s}");
    }

    [Fact]
    public void SlidingLayersCache_KeepsOnlyWhatTheWindowCanReach()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(ArchFixtures.Model("tiny-gemma2")); // layers: sliding, full, sliding; W = 4
        using var cache = m.NewCache();
        using var _ = no_grad();
        var ids = ArchFixtures.Input("input_ids_right").narrow(0, 0, 1);
        var whole = m.Forward(new CausalLMInput { InputIds = ids }).Logits;
        var steps = new List<Tensor> { m.Forward(new CausalLMInput { InputIds = ids.narrow(1, 0, 7), Cache = cache }).Logits };
        Assert.Equal(7, cache.Length);
        Assert.Equal([3L, 7, 3], Enumerable.Range(0, 3).Select(cache.StoredLength));
        for (int i = 7; i < 12; i++) steps.Add(m.Forward(new CausalLMInput { InputIds = ids.narrow(1, i, 1), Cache = cache }).Logits);
        Assert.Equal(12, cache.Length);
        Assert.Equal([3L, 12, 3], Enumerable.Range(0, 3).Select(cache.StoredLength));
        Close(torch.cat(steps, 1), whole, Atol, "cached steps vs one forward");
    }

    /// <summary>The fused kernel (float32 default) and the eager reference agree where both apply, windows and GQA included.</summary>
    [Theory]
    [InlineData("tiny-mistral-sw")]
    [InlineData("tiny-qwen2-sw")]
    [InlineData("tiny-phi3-longrope")]
    public void FusedEqualsEager(string name)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(ArchFixtures.Extra(name));
        using var _ = no_grad();
        foreach (var which in new[] { "right", "left" })
        {
            var input = new CausalLMInput
            {
                InputIds = ArchFixtures.Input($"input_ids_{which}"), AttentionMask = ArchFixtures.Input($"attention_mask_{which}"),
                PositionIds = which == "left" ? ArchFixtures.Input("position_ids_left") : null,
            };
            var fused = m.Forward(input).Logits;
            Attention.UseFusedKernel = false;
            Tensor eager;
            try { eager = m.Forward(input).Logits; }
            finally { Attention.UseFusedKernel = true; }
            var valid = ArchFixtures.Input($"attention_mask_{which}").to_type(ScalarType.Bool);
            Close(fused[valid], eager[valid], Atol, $"{name} {which}");
        }
    }
}
