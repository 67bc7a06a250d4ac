using ML.Finetune.Models;
using Xunit;
using static TorchSharp.torch;

namespace ML.Finetune.Tests;

public class ModelIoTests
{
    public static TheoryData<string> Models => new() { "tiny-gpt2", "tiny-llama", "tiny-qwen2" };

    [Theory, MemberData(nameof(Models))]
    public void SaveThenLoad_GivesIdenticalLogits_AndHFKeys(string name)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model(name));
        var dir = Fixtures.TempDir();
        CausalLMFactory.SavePretrained(m, dir);
        // Same tensor names and shapes as the HF file (GPT-2 transposed back, tied head omitted).
        var ours = Checkpoints.SafeTensors.ReadHeader(Path.Combine(dir, "model.safetensors")).Tensors;
        var hf = Checkpoints.SafeTensors.ReadHeader(Path.Combine(Fixtures.Model(name), "model.safetensors")).Tensors;
        Assert.Equal(hf.Keys.Order(), ours.Keys.Order());
        foreach (var k in hf.Keys) Assert.Equal(hf[k].Shape, ours[k].Shape);
        using var back = CausalLMFactory.LoadPretrained(dir);
        Assert.Equal(m.Config, back.Config);
        var input = new CausalLMInput { InputIds = Fixtures.Input("input_ids_right"), AttentionMask = Fixtures.Input("attention_mask_right") };
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(m.Forward(input).Logits, back.Forward(input).Logits));
    }

    [Theory, MemberData(nameof(Models))]
    public void CreateRandom_SameSeedSameWeights_DifferentSeedDifferent(string name)
    {
        using var scope = NewDisposeScope();
        var cfg = CausalLMConfig.Load(Fixtures.Model(name));
        using var a = CausalLMFactory.CreateRandom(cfg, 42);
        using var b = CausalLMFactory.CreateRandom(cfg, 42);
        using var c = CausalLMFactory.CreateRandom(cfg, 43);
        var pb = b.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var pc = c.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        bool anyDiff = false;
        foreach (var (n, p) in a.named_parameters())
        {
            Assert.True(Fixtures.MaxAbsDiff(p, pb[n]) == 0, n);
            anyDiff |= Fixtures.MaxAbsDiff(p, pc[n]) != 0;
        }
        Assert.True(anyDiff);
        // Parameter names equal the HF checkpoint keys; the tied head is counted once.
        var hf = Checkpoints.SafeTensors.ReadHeader(Path.Combine(Fixtures.Model(name), "model.safetensors")).Tensors.Keys;
        Assert.Equal(hf.Order(), a.named_parameters().Select(p => p.name).Order());
    }

    [Fact]
    public void BFloat16Compute_ReturnsFloat32Logits_CloseToFloat32()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"), new ModelLoadOptions { DType = ScalarType.BFloat16 });
        var o = m.Forward(new CausalLMInput { InputIds = Fixtures.Input("input_ids_right"), AttentionMask = Fixtures.Input("attention_mask_right") });
        Assert.Equal(ScalarType.Float32, o.Logits.dtype);
        Assert.True(Fixtures.MaxAbsDiff(o.Logits, Fixtures.Ref("tiny-llama", "logits_right")) < 0.25);
    }

    [Fact]
    public void ConfigToJson_RoundTrips()
    {
        foreach (var name in new[] { "tiny-gpt2", "tiny-llama", "tiny-qwen2" })
        {
            var cfg = CausalLMConfig.Load(Fixtures.Model(name));
            Assert.Equal(cfg, CausalLMConfig.Parse(cfg.ToJson()));
        }
        var q = CausalLMConfig.Load(Fixtures.Model("tiny-qwen2"));
        Assert.Equal(1e6, q.RopeTheta);
        Assert.True(q.AttentionBias && q.TieWordEmbeddings);
        Assert.Equal(2, q.NumKeyValueHeads);
        var g = CausalLMConfig.Load(Fixtures.Model("tiny-gpt2"));
        Assert.Equal(256, g.IntermediateSize);
        Assert.True(g.TieWordEmbeddings);
        Assert.Equal(new long[] { 2 }, g.EosTokenIds);
        Assert.Equal(500000, CausalLMConfig.Parse("""{"model_type":"llama","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"rope_theta":500000}""").RopeTheta);
    }
}
