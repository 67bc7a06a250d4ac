using ML.Finetune.Generation;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Families;

/// <summary>Generation quirks (eos lists from generation_config.json, softcapped logits) and the bf16 path on the new families.</summary>
public class FamilyRuntimeTests
{
    /// <summary>
    /// Llama 3.x and Gemma 3 instruct checkpoints list several eos ids in generation_config.json; generation stops at
    /// any of them. tiny-gemma3's greedy continuation is 859 859 859 859 846 846 846 587 (FixturesArch README).
    /// </summary>
    [Fact]
    public void EosList_FromGenerationConfig_StopsAtAnyOfItsIds()
    {
        using var scope = NewDisposeScope();
        var dir = Fixtures.TempDir();
        foreach (var f in Directory.GetFiles(ArchFixtures.Model("tiny-gemma3"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{"bos_token_id": 1, "eos_token_id": [2, 846, 587], "pad_token_id": 0}""");
        using var m = CausalLMFactory.LoadPretrained(dir);
        Assert.Equal([2L, 846, 587], m.Config.EosTokenIds);
        long[] prompt = [759, 958, 726, 452, 166, 112, 554];
        foreach (bool cache in new[] { true, false })
        {
            var r = TextGenerator.Generate(m, [prompt], new GenerationOptions { MaxNewTokens = 8, UseCache = cache });
            Assert.Equal([859L, 859, 859, 859, 846], r.NewTokens[0]);
        }
        Directory.Delete(dir, true);
    }

    /// <summary>Gemma 2's final softcap bounds the logits the generator and the loss see (|z| &lt; 3 here).</summary>
    [Fact]
    public void Gemma2_LogitsAreSoftcapped_InForwardAndGeneration()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(ArchFixtures.Model("tiny-gemma2"));
        var logits = m.Forward(new CausalLMInput { InputIds = ArchFixtures.Input("input_ids_right") }).Logits;
        Assert.True(logits.abs().max().item<float>() < 3.0f);
        var h = m.ForwardHidden(new CausalLMInput { InputIds = ArchFixtures.Input("input_ids_right") }).LastHiddenState;
        var raw = nn.functional.linear(h, m.OutputWeight);
        Assert.True(raw.abs().max().item<float>() > 3.0f, "the cap must bind somewhere for this check to mean anything");
        Assert.True(Fixtures.MaxAbsDiff(raw.div(3.0).tanh().mul(3.0), logits) < 1e-6);
        var r = TextGenerator.Generate(m, [[759, 958, 726]], new GenerationOptions { MaxNewTokens = 3, OutputLogits = true, EosTokenIds = [] });
        Assert.All(r.StepLogits!, s => Assert.True(s.abs().max().item<float>() < 3.0f));
    }

    /// <summary>bf16 compute on every new family: float32 logits close to HF's float32 ones (bf16 rounding only).</summary>
    [Theory]
    [InlineData("tiny-qwen3")]
    [InlineData("tiny-phi3")]
    [InlineData("tiny-gemma2")]
    [InlineData("tiny-gemma3")]
    [InlineData("tiny-qwen2-yarn")]
    public void BFloat16_ReturnsFloat32Logits_CloseToHF(string name)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(ArchFixtures.Model(name), new ModelLoadOptions { DType = ScalarType.BFloat16 });
        var mask = ArchFixtures.Input("attention_mask_right");
        var logits = m.Forward(new CausalLMInput { InputIds = ArchFixtures.Input("input_ids_right"), AttentionMask = mask }).Logits;
        Assert.Equal(ScalarType.Float32, logits.dtype);
        var valid = mask.to_type(ScalarType.Bool);
        double d = Fixtures.MaxAbsDiff(logits[valid], ArchFixtures.Ref(name, "logits_right")[valid]);
        Assert.True(d < 0.25, $"{name} bf16 vs f32 reference {d}");
        var r = TextGenerator.Generate(m, [[759, 958, 726, 452, 166, 112, 554]], new GenerationOptions { MaxNewTokens = 4, EosTokenIds = [] });
        Assert.Equal(4, r.NewTokens[0].Length);
    }
}
