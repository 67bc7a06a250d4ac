using System.Text.Json.Nodes;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Families;

/// <summary>
/// config.json in both layouts (transformers 5.x rope_parameters, 4.x rope_theta + rope_scaling), clear errors for what
/// we do not support, and SavePretrained/CreateRandom on every new family.
/// </summary>
public class FamilyConfigTests
{
    public static TheoryData<string> Models => new(ArchFixtures.Models);
    public static TheoryData<string> AllFolders => new(ArchFixtures.Models.Select(ArchFixtures.Model)
        .Concat(new[] { "tiny-mistral-sw", "tiny-qwen2-sw", "tiny-phi3-longrope" }.Select(ArchFixtures.Extra)));

    static JsonObject ConfigJson(string folder) => JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!.AsObject();

    /// <summary>The manifest's legacy_config_roundtrip: the 4.x keys transformers 5.12 reads to the same rope_parameters.</summary>
    static JsonObject LegacyConfig(string name, bool typeSpelling)
    {
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(ArchFixtures.Root, "manifest.json")))!;
        var legacy = manifest["legacy_config_roundtrip"]![name]!["legacy_keys"]!.AsObject();
        var o = ConfigJson(ArchFixtures.Model(name));
        o.Remove("rope_parameters");
        foreach (var (k, v) in legacy)
        {
            var value = v?.DeepClone();
            if (typeSpelling && k == "rope_scaling" && value is JsonObject rs && rs.Remove("rope_type", out var t)) rs["type"] = t;
            o[k] = value;
        }
        return o;
    }

    [Theory, MemberData(nameof(Models))]
    public void LegacyLayout_ParsesToTheSameConfig_AlsoWithTypeSpelling(string name)
    {
        var modern = CausalLMConfig.Parse(ConfigJson(ArchFixtures.Model(name)).ToJsonString());
        foreach (bool typeSpelling in new[] { false, true })
            Assert.Equal(modern, CausalLMConfig.Parse(LegacyConfig(name, typeSpelling).ToJsonString(), "legacy/config.json"));
    }

    [Fact]
    public void LegacyLayout_LoadsToIdenticalLogits()
    {
        using var scope = NewDisposeScope();
        foreach (var name in new[] { "tiny-gemma3", "tiny-phi3", "tiny-llama3-rope" })
        {
            var dir = Fixtures.TempDir();
            foreach (var f in Directory.GetFiles(ArchFixtures.Model(name))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            File.WriteAllText(Path.Combine(dir, "config.json"), LegacyConfig(name, typeSpelling: true).ToJsonString());
            using var a = CausalLMFactory.LoadPretrained(dir);
            var logits = a.Forward(new CausalLMInput { InputIds = ArchFixtures.Input("input_ids_right"), AttentionMask = ArchFixtures.Input("attention_mask_right") }).Logits;
            Assert.True(Fixtures.MaxAbsDiff(logits, ArchFixtures.Ref(name, "logits_right")) < 1e-5, name);
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void FamilySettings_AreReadAsHFReadsThem()
    {
        var g2 = CausalLMConfig.Load(ArchFixtures.Model("tiny-gemma2"));
        Assert.Equal([CausalLMConfig.SlidingAttention, CausalLMConfig.FullAttention, CausalLMConfig.SlidingAttention], g2.LayerTypes);
        Assert.Equal((4, 32.0, 2.0, 3.0), (g2.SlidingWindow!.Value, g2.QueryPreAttnScalar!.Value, g2.AttnLogitSoftcapping!.Value, g2.FinalLogitSoftcapping!.Value));
        Assert.Equal("gelu_pytorch_tanh", g2.HiddenAct);
        var g3 = CausalLMConfig.Load(ArchFixtures.Model("tiny-gemma3"));
        Assert.Null(g3.AttnLogitSoftcapping);
        Assert.Equal(("linear", 1e6, 8.0), (g3.Rope.Type, g3.Rope.Theta, g3.Rope.Factor!.Value));
        Assert.Equal(("default", 1e4), (g3.SlidingRope!.Type, g3.SlidingRope.Theta));
        Assert.Same(g3.SlidingRope, g3.RopeOf(0));
        Assert.Same(g3.Rope, g3.RopeOf(2));
        var phi = CausalLMConfig.Load(ArchFixtures.Model("tiny-phi3"));
        Assert.Equal((0.75, 12), (phi.Rope.PartialRotaryFactor, phi.Rope.RotaryDim(phi.HeadDim)));
        Assert.False(phi.TieWordEmbeddings);
        var q3 = CausalLMConfig.Load(ArchFixtures.Model("tiny-qwen3"));
        Assert.Equal(32, q3.HeadDim);
        Assert.Null(q3.SlidingWindow);
        // Absent keys take HF's defaults: Gemma 2 softcaps 50/30, window 4096, alternating layers; Mistral window 4096.
        var bare = """{"model_type":"gemma2","vocab_size":10,"hidden_size":8,"num_hidden_layers":3,"num_attention_heads":2,"intermediate_size":16}""";
        var d = CausalLMConfig.Parse(bare);
        Assert.Equal((50.0, 30.0, 4096, 256.0, 256), (d.AttnLogitSoftcapping!.Value, d.FinalLogitSoftcapping!.Value, d.SlidingWindow!.Value, d.QueryPreAttnScalar!.Value, d.HeadDim));
        Assert.Equal([CausalLMConfig.SlidingAttention, CausalLMConfig.FullAttention, CausalLMConfig.SlidingAttention], d.LayerTypes);
        Assert.Equal(4096, CausalLMConfig.Parse(bare.Replace("gemma2", "mistral")).WindowOf(1));
        Assert.Null(CausalLMConfig.Parse(bare.Replace("gemma2", "mistral").Replace("}", ",\"sliding_window\":null}")).WindowOf(1));
        // Qwen: use_sliding_window switches layers from max_window_layers on.
        var qw = CausalLMConfig.Parse(bare.Replace("gemma2", "qwen2").Replace("}", ",\"use_sliding_window\":true,\"sliding_window\":8,\"max_window_layers\":2}"));
        Assert.Equal(new int?[] { null, null, 8 }, Enumerable.Range(0, 3).Select(qw.WindowOf));
    }

    [Theory]
    [InlineData("llama", "\"rope_scaling\":{\"rope_type\":\"su2\",\"factor\":2}", "rope_scaling.rope_type", "su2")]
    [InlineData("llama", "\"rope_parameters\":{\"type\":\"proportional\",\"rope_theta\":1e4}", "rope_parameters.type", "proportional")]
    [InlineData("phi3", "\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":2}", "rope_scaling.rope_type", "phi3 accepts")]
    [InlineData("llama", "\"partial_rotary_factor\":0.5,\"rope_parameters\":{\"rope_type\":\"default\",\"partial_rotary_factor\":0.5}", "partial_rotary_factor", "phi3 only")]
    [InlineData("gemma3_text", "\"rope_parameters\":{\"rope_type\":\"default\"}", "rope_parameters", "per layer type")]
    [InlineData("gemma2", "\"use_bidirectional_attention\":true", "use_bidirectional_attention", "bidirectional")]
    [InlineData("gemma2", "\"layer_types\":[\"full_attention\",\"chunked_attention\"]", "layer_types", "chunked_attention")]
    [InlineData("gemma2", "\"layer_types\":[\"full_attention\"]", "layer_types", "has 1 entries for 2 layers")]
    [InlineData("gemma2", "\"sliding_window\":null", "sliding_window", "sliding_attention layers")]
    [InlineData("llama", "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8}", "low_freq_factor", "required")]
    [InlineData("phi3", "\"rope_scaling\":{\"type\":\"longrope\",\"short_factor\":[1,1,1],\"long_factor\":[1,1]}", "short_factor", "has 3 entries; rotary dim 4 needs 2")]
    [InlineData("llama", "\"hidden_act\":\"relu\"", "hidden_act", "relu")]
    public void Unsupported_OrInvalid_IsAClearErrorNamingFileAndField(string type, string extra, string field, string what)
    {
        var json = $$"""{"model_type":"{{type}}","vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,{{extra}}}""";
        var e = Assert.ThrowsAny<Exception>(() => CausalLMConfig.Parse(json, "some/dir/config.json"));
        Assert.True(e is CheckpointFormatException or UnsupportedModelException, e.GetType().Name + ": " + e.Message);
        Assert.Contains("some/dir/config.json", e.Message);
        Assert.Contains(field, e.Message);
        Assert.Contains(what, e.Message);
    }

    [Theory, MemberData(nameof(AllFolders))]
    public void SaveThenLoad_SameConfigKeysAndLogits(string folder)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(folder);
        Assert.Equal(m.Config, CausalLMConfig.Parse(m.Config.ToJson()));
        var dir = Fixtures.TempDir();
        CausalLMFactory.SavePretrained(m, dir);
        var ours = SafeTensors.ReadHeader(Path.Combine(dir, "model.safetensors")).Tensors;
        var hf = SafeTensors.ReadHeader(Path.Combine(folder, "model.safetensors")).Tensors;
        Assert.Equal(hf.Keys.Order(), ours.Keys.Order());
        using var back = CausalLMFactory.LoadPretrained(dir);
        Assert.Equal(m.Config, back.Config);
        var input = new CausalLMInput { InputIds = ArchFixtures.Input("input_ids_right"), AttentionMask = ArchFixtures.Input("attention_mask_right") };
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(m.Forward(input).Logits, back.Forward(input).Logits));
        // The written config keeps the family's native fields (what transformers reads).
        var written = ConfigJson(dir);
        var original = ConfigJson(folder);
        foreach (var key in new[] { "model_type", "original_max_position_embeddings", "sliding_window", "layer_types", "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping", "hidden_activation", "use_sliding_window" })
            if (original.ContainsKey(key)) Assert.True(JsonNode.DeepEquals(original[key], written[key]), $"{key}: {original[key]?.ToJsonString()} vs {written[key]?.ToJsonString()}");
        Directory.Delete(dir, true);
    }

    [Theory, MemberData(nameof(Models))]
    public void CreateRandom_HasTheCheckpointKeys_AndNeutralNorms(string name)
    {
        using var scope = NewDisposeScope();
        var cfg = CausalLMConfig.Load(ArchFixtures.Model(name));
        using var m = CausalLMFactory.CreateRandom(cfg, 3);
        var hf = SafeTensors.ReadHeader(Path.Combine(ArchFixtures.Model(name), "model.safetensors")).Tensors;
        Assert.Equal(hf.Keys.Order(), m.named_parameters().Select(p => p.name).Order());
        foreach (var (n, p) in m.named_parameters())
        {
            Assert.Equal(hf[n].Shape, p.shape);
            // x̂·(1 + w) norms start at 0 (Gemma, incl. its q/k norms), w·x̂ norms at 1: a norm that does nothing.
            if (n.Contains("norm")) Assert.Equal(cfg.GetFamily().Gemma ? 0.0 : 1.0, p.mean().item<float>());
        }
        using var _ = no_grad();
        foreach (var norm in m.modules().OfType<RMSNorm>())
        {
            var x = torch.randn(2, 3, norm.weight.shape[0]);
            Assert.True(Fixtures.MaxAbsDiff(norm.forward(x), x.mul(x.pow(2).mean([-1L], keepdim: true).add(cfg.NormEps).rsqrt())) < 1e-6);
        }
    }
}
