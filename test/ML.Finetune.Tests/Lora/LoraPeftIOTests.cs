using System.Text.Json.Nodes;
using ML.Finetune.Adapters;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using static TorchSharp.torch;
using static ML.Finetune.Tests.Lora.LoraTestUtil;

namespace ML.Finetune.Tests.Lora;

/// <summary>PEFT adapter folders: export, import, key sets, round trips.</summary>
public class LoraPeftIOTests
{
    static JsonObject ReadJson(string folder) => JsonNode.Parse(File.ReadAllText(Path.Combine(folder, PeftLoraIO.ConfigFile)))!.AsObject();

    [Fact]
    public void Lora_ExportThenImport_IdenticalLogits_AndFilesMatchPeftFixture()
    {
        using var scope = NewDisposeScope();
        var (m, method) = LlamaWithFixtureAdapter();
        using var _ = m;
        var before = Logits(m, method);
        string dir = Fixtures.TempDir();
        PeftLoraIO.Export(method, dir, baseModelNameOrPath: "tiny-llama");
        Assert.Equal(new[] { PeftLoraIO.ConfigFile, PeftLoraIO.WeightsFile }, Directory.GetFiles(dir).Select(Path.GetFileName).OrderBy(f => f));

        string fixture = Fixtures.Model("tiny-llama-lora");
        var ours = SafeTensors.ReadHeader(Path.Combine(dir, PeftLoraIO.WeightsFile));
        var theirs = SafeTensors.ReadHeader(Path.Combine(fixture, PeftLoraIO.WeightsFile));
        Assert.Equal(theirs.Tensors.Keys.OrderBy(k => k), ours.Tensors.Keys.OrderBy(k => k));
        foreach (var (k, info) in theirs.Tensors) { Assert.Equal(info.Shape, ours.Tensors[k].Shape); Assert.Equal(info.DType, ours.Tensors[k].DType); }
        // Same tensor values as the fixture (we imported it unchanged).
        var a = SafeTensors.Load(Path.Combine(dir, PeftLoraIO.WeightsFile));
        var b = SafeTensors.Load(Path.Combine(fixture, PeftLoraIO.WeightsFile));
        foreach (var k in a.Keys) Assert.Equal(0.0, Fixtures.MaxAbsDiff(a[k], b[k]));

        var cfgOurs = ReadJson(dir);
        var cfgTheirs = ReadJson(fixture);
        Assert.Equal(cfgTheirs.Select(kv => kv.Key).OrderBy(k => k, StringComparer.Ordinal), cfgOurs.Select(kv => kv.Key).OrderBy(k => k, StringComparer.Ordinal));
        foreach (var (k, v) in cfgTheirs)
            Assert.True(JsonNode.DeepEquals(v, cfgOurs[k]) || (v is JsonValue && cfgOurs[k] is JsonValue && v!.ToJsonString().Replace(".0", "") == cfgOurs[k]!.ToJsonString()),
                $"config field '{k}': fixture {v?.ToJsonString()} vs ours {cfgOurs[k]?.ToJsonString()}");

        using var m2 = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var method2 = PeftLoraIO.Import(m2, dir);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(Logits(m2, method2), before));
        Assert.Empty(Directory.GetFiles(dir, "*.tmp")); // atomic writes leave nothing behind
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Lora_ImportedAdapter_ContinuesTraining_FromTrainedFixtureInitialisation()
    {
        using var scope = NewDisposeScope();
        // Initialising from the trained adapter gives peft's trained logits; it stays trainable.
        var (m, method) = LlamaWithFixtureAdapter("tiny-llama-lora-trained");
        using var _ = m;
        Assert.True(Fixtures.MaxAbsDiff(Logits(m, method), Fixtures.Ref("tiny-llama-lora", "trained_logits_right")) < 1e-4);
        Assert.All(method.TrainableParameters, p => Assert.True(p.Parameter.requires_grad));
        var losses = new List<float>();
        Sgd(m, method, 2, 0.1, (_, l) => losses.Add(l.item<float>()));
        Assert.True(Math.Abs(losses[0] - Fixtures.Ref("tiny-llama-lora", "sgd_losses")[3].item<float>()) < 1e-4);
        Assert.True(losses[1] < losses[0]);
    }

    [Fact]
    public void Lora_InitialAdapterFolder_InitialisesOnAttach_OrRefusesMismatchBeforeAttaching()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var bad = new LoraMethod(new LoraConfig { Rank = 8, Alpha = 8 }) { InitialAdapterFolder = Fixtures.Model("tiny-llama-lora-trained") };
        var e = Assert.Throws<InvalidDataException>(() => bad.Attach(m, 0));
        Assert.Contains("lora_A.weight' has shape [4,64] but this model needs [8,64]", e.Message);
        Assert.DoesNotContain(m.NamedLinears(), l => l.module.Adapter != null);
        Assert.All(m.parameters(), p => Assert.True(p.requires_grad));
        var method = new LoraMethod(new LoraConfig { Rank = 4, Alpha = 8 }) { InitialAdapterFolder = Fixtures.Model("tiny-llama-lora-trained") };
        method.Attach(m, 0);
        Assert.True(Fixtures.MaxAbsDiff(Logits(m, method), Fixtures.Ref("tiny-llama-lora", "trained_logits_right")) < 1e-4);
    }

    [Fact]
    public void Lora_SaveStateLoadState_RoundTripsOnAFreshModel()
    {
        using var scope = NewDisposeScope();
        var (m, method) = LlamaWithFixtureAdapter();
        using var _ = m;
        var (tensors, json) = method.SaveState();
        Assert.Equal(8, tensors.Count);
        Assert.Contains("model.layers.0.self_attn.q_proj.lora.A", tensors.Keys);
        using var m2 = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var method2 = new LoraMethod(LoraMethod.ConfigFromStateJson(json));
        method2.Attach(m2, seed: 123);
        method2.LoadState(tensors);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(Logits(m2, method2), Logits(m, method)));
        Assert.Contains("\"trainable_parameters\"", json);
        // Trainable names equal the model's own parameter names.
        var names = m2.named_parameters().Select(p => p.name).ToHashSet();
        Assert.All(method2.TrainableParameters, p => Assert.Contains(p.Name, names));
        // Mismatched state is refused with the tensor named.
        var bad = tensors.ToDictionary(kv => kv.Key, kv => kv.Value);
        bad["model.layers.0.self_attn.q_proj.lora.A"] = zeros(3, 64);
        var e = Assert.Throws<InvalidDataException>(() => method2.LoadState(bad));
        Assert.Contains("model.layers.0.self_attn.q_proj.lora.A", e.Message);
        Assert.Contains("[3,64]", e.Message);
        Assert.Contains("[4,64]", e.Message);
    }

    [Fact]
    public void Lora_TrainableParameterSummary_CountsAdapterOnly()
    {
        using var scope = NewDisposeScope();
        var (m, method) = LlamaWithFixtureAdapter();
        using var _ = m;
        // q_proj 64→64 and v_proj 64→32 in 2 layers, r = 4: 2·(4·64 + 64·4 + 4·64 + 32·4).
        long expected = 2 * (4 * 64 + 64 * 4 + 4 * 64 + 32 * 4);
        Assert.Equal(expected, method.Summary!.Trainable);
        Assert.Equal(m.parameters().Sum(p => p.numel()), method.Summary.Total);
        Assert.Equal((double)expected / method.Summary.Total, method.Summary.Fraction, 12);
        Assert.Equal(expected, m.parameters().Where(p => p.requires_grad).Sum(p => p.numel()));
    }
}
