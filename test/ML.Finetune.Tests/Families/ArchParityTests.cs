using ML.Finetune.Generation;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Families;

/// <summary>
/// Forward-pass parity with transformers 5.12 on every model of FixturesArch (README there): Llama 3.x / linear /
/// dynamic RoPE, Qwen2 + YaRN, Qwen3, Phi-3, Gemma 2, Gemma 3. float32 at atol 1e-5 (the README's suggested tolerance),
/// greedy ids exactly.
/// </summary>
public class ArchParityTests
{
    public static TheoryData<string> Models => new(ArchFixtures.Models);
    const double Atol = 1e-5;

    static CausalLM Load(string name, ScalarType dtype = ScalarType.Float32) =>
        CausalLMFactory.LoadPretrained(ArchFixtures.Model(name), new ModelLoadOptions { DType = dtype });

    static CausalLMInput Right(bool hidden = false) => new()
    {
        InputIds = ArchFixtures.Input("input_ids_right"), AttentionMask = ArchFixtures.Input("attention_mask_right"), OutputHiddenStates = hidden,
    };

    static void Close(Tensor ours, Tensor reference, double tol, string what)
    {
        double d = Fixtures.MaxAbsDiff(ours, reference);
        Assert.True(d < tol, $"{what}: max abs diff {d:E2} (tolerance {tol:E0})");
    }

    [Theory, MemberData(nameof(Models))]
    public void RightPadded_LogitsLogprobsLossHiddenStates_MatchHF(string name)
    {
        using var scope = NewDisposeScope();
        using var m = Load(name);
        var o = m.Forward(Right(hidden: true));
        Assert.Equal(ScalarType.Float32, o.Logits.dtype);
        Close(o.Logits, ArchFixtures.Ref(name, "logits_right"), Atol, $"{name} logits");
        var ids = ArchFixtures.Input("input_ids_right");
        Close(ParityTests.NextTokenLogprobs(o.Logits, ids), ArchFixtures.Ref(name, "next_token_logprobs_right"), Atol, $"{name} logprobs");
        Close(ParityTests.HfLoss(o.Logits, ArchFixtures.Input("labels_right")), ArchFixtures.Ref(name, "loss_right"), Atol, $"{name} loss");
        Assert.Equal(m.Config.NumLayers + 1, o.HiddenStates!.Count);
        Close(torch.stack(o.HiddenStates), ArchFixtures.Ref(name, "hidden_states_right"), Atol, $"{name} hidden states");
    }

    [Theory, MemberData(nameof(Models))]
    public void LeftPadded_WithPositionIds_MatchesHFAtValidPositions(string name)
    {
        using var scope = NewDisposeScope();
        using var m = Load(name);
        var mask = ArchFixtures.Input("attention_mask_left");
        var ids = ArchFixtures.Input("input_ids_left");
        var logits = m.Forward(new CausalLMInput { InputIds = ids, AttentionMask = mask, PositionIds = ArchFixtures.Input("position_ids_left") }).Logits;
        Assert.False(logits.isnan().any().item<bool>(), "pad rows must stay finite");
        var valid = mask.to_type(ScalarType.Bool);
        Close(logits[valid], ArchFixtures.Ref(name, "logits_left")[valid], Atol, $"{name} left logits");
        var validPairs = valid.narrow(1, 0, 11).logical_and(valid.narrow(1, 1, 11)); // mask 1 at t and t+1
        Close(ParityTests.NextTokenLogprobs(logits, ids)[validPairs], ArchFixtures.Ref(name, "next_token_logprobs_left")[validPairs], Atol, $"{name} left logprobs");
    }

    /// <summary>HF's float64 keeps float32 islands (RMSNorm, RoPE, softmax); so do we. README: logits 1e-5, loss 1e-6.</summary>
    [Theory, MemberData(nameof(Models))]
    public void Float64_MatchesHFFloat64(string name)
    {
        using var scope = NewDisposeScope();
        using var m = Load(name, ScalarType.Float64);
        var logits = m.Forward(Right()).Logits;
        Assert.Equal(ScalarType.Float64, logits.dtype);
        Close(logits, ArchFixtures.Ref(name, "logits_right_f64"), 1e-5, $"{name} f64 logits");
        Close(ParityTests.HfLoss(logits, ArchFixtures.Input("labels_right")), ArchFixtures.Ref(name, "loss_right_f64"), 1e-6, $"{name} f64 loss");
    }

    /// <summary>The frequencies each rope rule gives equal HF's (relative 1e-6; they are float32 values down to 3e-7).</summary>
    [Theory, MemberData(nameof(Models))]
    public void RopeInverseFrequencies_MatchHF(string name)
    {
        using var scope = NewDisposeScope();
        var c = CausalLMConfig.Load(ArchFixtures.Model(name));
        var ropes = c.SlidingRope is null ? [("", c.Rope)] : new[] { (".full_attention", c.Rope), (".sliding_attention", c.SlidingRope) };
        foreach (var (suffix, rope) in ropes)
        {
            var (inv, scaling) = RotaryEmbedding.InverseFrequencies(rope, c.HeadDim, c.MaxPositionEmbeddings, seqLen: 12); // the fixtures' 12-token batch
            var expected = ArchFixtures.Ref(name, "rope_inv_freq" + suffix);
            Assert.Equal(expected.shape, inv.shape);
            double rel = inv.sub(expected).abs().div(expected.abs()).max().item<float>();
            Assert.True(rel <= 1e-6, $"{name}{suffix} inv_freq relative diff {rel:E2}");
            Assert.Equal(ArchFixtures.Ref(name, "rope_attention_scaling" + suffix).item<float>(), (float)scaling, 6);
        }
    }

    /// <summary>HF's generate (default KV cache, sliding layers keep W−1 keys) and our generator, with and without the cache.</summary>
    [Theory, MemberData(nameof(Models))]
    public void GreedyIds_EqualHF_CachedAndUncached(string name)
    {
        using var scope = NewDisposeScope();
        using var m = Load(name);
        var prompt = ArchFixtures.Input("generate_prompt_ids");
        var expected = ArchFixtures.Ref(name, "generate_greedy_ids")[0].narrow(0, prompt.shape[1], 8).data<long>().ToArray();
        foreach (bool cache in new[] { true, false })
        {
            var r = TextGenerator.Generate(m, prompt, torch.ones_like(prompt), new GenerationOptions { MaxNewTokens = 8, UseCache = cache, EosTokenIds = [] });
            Assert.Equal(expected, r.NewTokens[0]);
        }
    }

    /// <summary>The head applied to the stored final-norm hidden states gives HF's logits (Gemma 2: softcap included).</summary>
    [Theory, MemberData(nameof(Models))]
    public void LogitsFromHidden_OnHFHiddenStates_GivesHFLogits(string name)
    {
        using var scope = NewDisposeScope();
        using var m = Load(name);
        var last = ArchFixtures.Ref(name, "hidden_states_right")[-1];
        Close(m.LogitsFromHidden(last), ArchFixtures.Ref(name, "logits_right"), Atol, $"{name} head");
        // Any subset of positions [N, d] gives those rows of the logits.
        var rows = last.reshape(-1, last.shape[^1]).index_select(0, torch.tensor(new long[] { 3, 17, 5 }));
        Close(m.LogitsFromHidden(rows), ArchFixtures.Ref(name, "logits_right").reshape(-1, m.Config.VocabSize).index_select(0, torch.tensor(new long[] { 3, 17, 5 })), Atol, $"{name} head rows");
    }
}
