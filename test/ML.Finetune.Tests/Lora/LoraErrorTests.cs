using ML.Finetune.Adapters;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Lora;

public class LoraErrorTests
{
    [Fact]
    public void Lora_ImportNonLoraPeftType_NotSupported_NamesTypeAndSupported()
    {
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var e = Assert.Throws<NotSupportedException>(() => PeftLoraIO.Import(m, Fixtures.Model("tiny-llama-prompt-tuning")));
        Assert.Contains("PROMPT_TUNING", e.Message);
        Assert.Contains("supported: LORA", e.Message);
        Assert.DoesNotContain(m.NamedLinears(), l => l.module.Adapter != null);
    }

    [Fact]
    public void Lora_ImportShapeMismatch_InvalidData_NamesKeyAndBothShapes()
    {
        using var scope = NewDisposeScope();
        string dir = Fixtures.TempDir();
        string src = Fixtures.Model("tiny-llama-lora");
        File.Copy(Path.Combine(src, PeftLoraIO.ConfigFile), Path.Combine(dir, PeftLoraIO.ConfigFile));
        var t = SafeTensors.Load(Path.Combine(src, PeftLoraIO.WeightsFile));
        const string key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";
        t[key] = zeros(48, 4);
        SafeTensors.Save(Path.Combine(dir, PeftLoraIO.WeightsFile), t);
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var e = Assert.Throws<InvalidDataException>(() => PeftLoraIO.Import(m, dir));
        Assert.Contains(key, e.Message);
        Assert.Contains("[48,4]", e.Message);
        Assert.Contains("[32,4]", e.Message);
        Assert.DoesNotContain(m.NamedLinears(), l => l.module.Adapter != null); // nothing attached on failure
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Lora_TargetsMatchingNothing_ArgumentException_ListsExistingModules()
    {
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var method = new LoraMethod(new LoraConfig { TargetModules = ["c_attn"] });
        var e = Assert.Throws<ArgumentException>(() => method.Attach(m, 0));
        Assert.Contains("c_attn", e.Message);
        foreach (var n in new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head" }) Assert.Contains(n, e.Message);
        var e2 = Assert.Throws<ArgumentException>(() => new LoraMethod(new LoraConfig { TargetModulesRegex = @"proj" }).Attach(m, 0));
        Assert.Contains("regex 'proj'", e2.Message);
        Assert.All(m.parameters(), p => Assert.True(p.requires_grad)); // model untouched
    }

    [Fact]
    public void Lora_RankOutOfRange_ArgumentOutOfRange()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoraMethod(new LoraConfig { Rank = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoraMethod(new LoraConfig { Rank = -3 }));
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        // v_proj is 64→32, so r = 33 is too large although q_proj (64→64) would allow it.
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new LoraMethod(new LoraConfig { Rank = 33 }).Attach(m, 0));
        Assert.Contains("v_proj", e.Message);
        Assert.Contains("32", e.Message);
        new LoraMethod(new LoraConfig { Rank = 32 }).Attach(m, 0);
        Assert.Throws<NotSupportedException>(() => new LoraMethod(new LoraConfig { Bias = "all" }));
    }
}
