using ML.Finetune.Training;
using System.Text.Json.Nodes;
using ML.Finetune.Adapters;
using ML.Finetune.Checkpoints;
using ML.Finetune.Generation;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Families;

/// <summary>
/// LoRA, prefix tuning and prompt tuning on the new families against PEFT 0.20 (FixturesArch/tiny-qwen3-lora and the
/// adapters of FixturesArch/extra): logits, merged logits, gradients and the SGD trajectory, PEFT files both ways, and
/// generation with the method in effect.
/// </summary>
public class FamilyAdapterTests
{
    const double Atol = 1e-5;
    static Tensor Ids => ArchFixtures.Input("input_ids_right");
    static Tensor Mask => ArchFixtures.Input("attention_mask_right");
    static Tensor Labels => ArchFixtures.Input("labels_right");

    static void Close(Tensor a, Tensor b, double tol, string what)
    {
        double d = Fixtures.MaxAbsDiff(a, b);
        Assert.True(d < tol, $"{what}: max abs diff {d:E2}");
    }

    static CausalLM Base(string name) => CausalLMFactory.LoadPretrained(ArchFixtures.Model(name));

    [Fact]
    public void LoraQwen3AllLinear_ReproducesPeftLogitsMergedGradientsAndSgdTrajectory()
    {
        using var scope = NewDisposeScope();
        const string refName = "tiny-qwen3-lora";
        using var m = Base("tiny-qwen3");
        var lora = PeftLoraIO.Import(m, ArchFixtures.Model(refName));
        Assert.Equal(14, lora.Targets.Count); // q,k,v,o,gate,up,down in 2 layers; the tied head is not a target
        Assert.Equal(9728, lora.TrainableParameters.Sum(p => p.Parameter.numel()));
        var logits = lora.Logits(m, Ids, Mask);
        Close(logits, ArchFixtures.Ref(refName, "logits_right"), Atol, "logits");
        Close(ParityTests.NextTokenLogprobs(logits, Ids), ArchFixtures.Ref(refName, "next_token_logprobs_right"), Atol, "logprobs");
        Close(ParityTests.HfLoss(logits, Labels), ArchFixtures.Ref(refName, "loss_right"), Atol, "loss");
        lora.Merge();
        Close(lora.Logits(m, Ids, Mask), ArchFixtures.Ref(refName, "merged_logits_right"), Atol, "merged logits");
        lora.Unmerge();

        var byKey = lora.Targets.SelectMany(t => new[] { (PeftLoraIO.KeyA(t.Path), t.Adapter.A), (PeftLoraIO.KeyB(t.Path), t.Adapter.B) }).ToList();
        var sgd = ArchFixtures.Ref(refName, "sgd_losses");
        var opt = optim.SGD(lora.TrainableParameters.Select(p => (TorchSharp.Modules.Parameter)p.Parameter), 0.05);
        m.train();
        for (int step = 0; step < 3; step++)
        {
            using var s = NewDisposeScope();
            opt.zero_grad();
            var loss = ParityTests.HfLoss(lora.Logits(m, Ids, Mask), Labels);
            Assert.True(Math.Abs(loss.item<float>() - sgd[step].item<float>()) < Atol, $"loss before step {step + 1}: {loss.item<float>()} vs {sgd[step].item<float>()}");
            loss.backward();
            if (step == 0)
                foreach (var (key, p) in byKey) Close(p.grad!, ArchFixtures.Ref(refName, "grad_step0." + key), Atol, $"grad {key}");
            opt.step();
        }
        m.eval();
        using (no_grad())
        {
            var trained = lora.Logits(m, Ids, Mask);
            Assert.True(Math.Abs(ParityTests.HfLoss(trained, Labels).item<float>() - sgd[3].item<float>()) < Atol, "loss after 3 steps");
            Close(trained, ArchFixtures.Ref(refName, "trained_logits_right"), Atol, "trained logits");
        }
        var file = SafeTensors.Load(Path.Combine(ArchFixtures.Model("tiny-qwen3-lora-trained"), PeftLoraIO.WeightsFile));
        Assert.Equal(file.Keys.Order(), byKey.Select(k => k.Item1).Order());
        foreach (var (key, p) in byKey) Close(p, file[key], Atol, $"trained {key}");
    }

    /// <summary>PEFT's adapters load (fused qkv_proj/gate_up_proj on Phi-3, all-linear on Gemma 3), and ours load back identically.</summary>
    [Theory]
    [InlineData("tiny-phi3-lora", "tiny-phi3", 8)]
    [InlineData("tiny-gemma3-lora", "tiny-gemma3", 21)]
    public void PeftLora_LoadsBothWays_OnTheNewFamilies(string adapter, string baseName, int targets)
    {
        using var scope = NewDisposeScope();
        using var m = Base(baseName);
        var lora = PeftLoraIO.Import(m, ArchFixtures.Extra(adapter));
        Assert.Equal(targets, lora.Targets.Count);
        var logits = lora.Logits(m, Ids, Mask);
        Close(logits, ArchFixtures.ExtraRef(adapter, "logits_right"), Atol, "logits");
        Close(ParityTests.HfLoss(logits, Labels), ArchFixtures.ExtraRef(adapter, "loss_right"), Atol, "loss");

        var dir = Fixtures.TempDir();
        PeftLoraIO.Export(lora, dir, baseName);
        var ours = SafeTensors.ReadHeader(Path.Combine(dir, PeftLoraIO.WeightsFile)).Tensors;
        var theirs = SafeTensors.ReadHeader(Path.Combine(ArchFixtures.Extra(adapter), PeftLoraIO.WeightsFile)).Tensors;
        Assert.Equal(theirs.Keys.Order(), ours.Keys.Order());
        foreach (var (k, info) in theirs) Assert.Equal(info.Shape, ours[k].Shape);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, PeftLoraIO.ConfigFile)))!;
        var peftCfg = JsonNode.Parse(File.ReadAllText(Path.Combine(ArchFixtures.Extra(adapter), PeftLoraIO.ConfigFile)))!;
        Assert.True(JsonNode.DeepEquals(peftCfg["target_modules"], cfg["target_modules"]), $"target_modules {cfg["target_modules"]!.ToJsonString()}");
        Assert.False((bool)cfg["fan_in_fan_out"]!);

        using var m2 = Base(baseName);
        var back = PeftLoraIO.Import(m2, dir);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(back.Logits(m2, Ids, Mask), logits));
        back.MergeAndUnload();
        Close(m2.Forward(new CausalLMInput { InputIds = Ids, AttentionMask = Mask }).Logits, ArchFixtures.ExtraRef(adapter, "merged_logits_right"), Atol, "merged");
        Directory.Delete(dir, true);
    }

    /// <summary>PEFT prefix adapters on GQA/MQA, head_dim ≠ hidden/heads and sliding layers: logits and PEFT's generate.</summary>
    [Theory]
    [InlineData("tiny-qwen3-prefix", "tiny-qwen3")]
    [InlineData("tiny-phi3-prefix", "tiny-phi3")]
    [InlineData("tiny-gemma2-prefix", "tiny-gemma2")]
    [InlineData("tiny-gemma3-prefix", "tiny-gemma3")]
    public void PeftPrefix_LogitsAndGeneration_MatchPeft_AndSaveRoundTrips(string adapter, string baseName)
    {
        using var scope = NewDisposeScope();
        using var m = Base(baseName);
        var px = PeftPromptLearning.LoadPrefixTuning(ArchFixtures.Extra(adapter), m);
        var valid = Mask.to_type(ScalarType.Bool);
        var logits = px.Logits(m, Ids, Mask);
        Close(logits[valid], ArchFixtures.ExtraRef(adapter, "logits_right")[valid], Atol, $"{adapter} logits");
        Close(ParityTests.HfLoss(logits, Labels), ArchFixtures.ExtraRef(adapter, "loss_right"), Atol, $"{adapter} loss");
        GreedyMatchesPeft(m, px, adapter);

        var dir = Fixtures.TempDir();
        PeftPromptLearning.Save(px, m, dir, baseName);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, PeftPromptLearning.ConfigFile)))!;
        var peftCfg = JsonNode.Parse(File.ReadAllText(Path.Combine(ArchFixtures.Extra(adapter), PeftPromptLearning.ConfigFile)))!;
        foreach (var field in new[] { "token_dim", "num_attention_heads", "num_layers", "num_virtual_tokens" })
            Assert.Equal((int)peftCfg[field]!, (int)cfg[field]!);
        using var m2 = Base(baseName);
        var back = PeftPromptLearning.LoadPrefixTuning(dir, m2);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(back.Logits(m2, Ids, Mask), logits));
        Directory.Delete(dir, true);
    }

    /// <summary>PEFT prompt tuning on Gemma: the soft prompt enters unscaled, token embeddings × √hidden (transformers 5.x).</summary>
    [Theory]
    [InlineData("tiny-gemma2-prompt", "tiny-gemma2")]
    [InlineData("tiny-gemma3-prompt", "tiny-gemma3")]
    public void PeftPrompt_OnGemma_LogitsAndGeneration_MatchPeft(string adapter, string baseName)
    {
        using var scope = NewDisposeScope();
        using var m = Base(baseName);
        var pt = PeftPromptLearning.LoadPromptTuning(ArchFixtures.Extra(adapter), m);
        int k = pt.NumVirtualTokens;
        var full = pt.FullLogits(m, Ids, Mask); // [B, k+T, V], PEFT's layout
        var valid = torch.cat([torch.ones(2, k, dtype: ScalarType.Int64), Mask], 1).to_type(ScalarType.Bool);
        Close(full[valid], ArchFixtures.ExtraRef(adapter, "logits_right")[valid], Atol, $"{adapter} logits");
        Close(ParityTests.HfLoss(pt.Logits(m, Ids, Mask), Labels), ArchFixtures.ExtraRef(adapter, "loss_right"), Atol, $"{adapter} loss");
        GreedyMatchesPeft(m, pt, adapter);

        var dir = Fixtures.TempDir();
        PeftPromptLearning.Save(pt, m, dir, baseName);
        using var m2 = Base(baseName);
        var back = PeftPromptLearning.LoadPromptTuning(dir, m2);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(back.FullLogits(m2, Ids, Mask), full));
        Directory.Delete(dir, true);
    }

    static void GreedyMatchesPeft(CausalLM m, ML.Finetune.Training.IFinetuneMethod method, string adapter)
    {
        var prompt = ArchFixtures.Input("generate_prompt_ids");
        var expected = ArchFixtures.ExtraRef(adapter, "generate_greedy_ids")[0].narrow(0, prompt.shape[1], 8).data<long>().ToArray();
        foreach (bool cache in new[] { true, false })
        {
            var r = TextGenerator.Generate(m, method, [prompt[0].data<long>().ToArray()], new GenerationOptions { MaxNewTokens = 8, UseCache = cache, EosTokenIds = [] });
            Assert.Equal(expected, r.NewTokens[0]);
        }
    }
}
