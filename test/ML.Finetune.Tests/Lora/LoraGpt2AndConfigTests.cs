using System.Text.Json.Nodes;
using ML.Finetune.Adapters;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static ML.Finetune.Tests.Lora.LoraTestUtil;

namespace ML.Finetune.Tests.Lora;

public class LoraGpt2AndConfigTests
{
    [Fact]
    public void Lora_Gpt2CAttn_AdamWTrains_OnlyAdaptersChange_AndRoundTripsThroughPeft()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        var baseWeights = m.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var method = new LoraMethod(new LoraConfig { Rank = 4, Alpha = 8, TargetModules = ["c_attn"] });
        method.Attach(m, seed: 42);
        Assert.Equal(["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"], method.Targets.Select(t => t.Path));
        // B = 0: the adapted model starts equal to the base.
        Assert.True(Fixtures.MaxAbsDiff(Logits(m, method), Fixtures.Ref("tiny-gpt2", "logits_right")) < 1e-5);

        var adapterParams = method.TrainableParameters.Select(p => (Parameter)p.Parameter).ToList();
        var opt = optim.AdamW(adapterParams, lr: 1e-2);
        var owned = opt.parameters().ToList();
        Assert.Equal(adapterParams.Count, owned.Count);
        Assert.All(owned, p => Assert.Contains(adapterParams, q => q.Handle == p.Handle));
        var losses = new List<float>();
        for (int i = 0; i < 8; i++)
        {
            using var s = NewDisposeScope();
            opt.zero_grad();
            var loss = Loss(m, method);
            losses.Add(loss.item<float>());
            loss.backward();
            foreach (var (name, p) in m.named_parameters())
                if (!name.Contains(".lora.")) Assert.True(p.grad is null, $"base parameter {name} got a gradient");
            opt.step();
        }
        Assert.True(losses[^1] < losses[0] - 0.05, $"loss {losses[0]} -> {losses[^1]}");
        Assert.Equal(adapterParams.Count, opt.state_dict().State.Count);
        foreach (var (name, p) in m.named_parameters())
            if (!name.Contains(".lora.")) Assert.Equal(0.0, Fixtures.MaxAbsDiff(p, baseWeights[name]));

        string dir = Fixtures.TempDir();
        PeftLoraIO.Export(method, dir, "tiny-gpt2");
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, PeftLoraIO.ConfigFile)))!;
        Assert.True(cfg["fan_in_fan_out"]!.GetValue<bool>());
        Assert.Equal("[\"c_attn\"]", cfg["target_modules"]!.ToJsonString());
        var header = SafeTensors.ReadHeader(Path.Combine(dir, PeftLoraIO.WeightsFile));
        Assert.Equal([4L, 64L], header.Tensors["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"].Shape);
        Assert.Equal([192L, 4L], header.Tensors["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"].Shape);
        using var m2 = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        var method2 = PeftLoraIO.Import(m2, dir);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(Logits(m2, method2), Logits(m, method)));
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Lora_TargetSelection_AllLinearRegexSuffixAndLayers()
    {
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var all = LoraMethod.SelectTargets(new LoraConfig { TargetModules = [LoraConfig.AllLinear] }, m);
        Assert.Equal(14, all.Count);
        Assert.DoesNotContain("lm_head", all);
        Assert.Equal(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"],
            LoraMethod.SelectTargets(new LoraConfig(), m)); // llama default
        Assert.Equal(["model.layers.1.mlp.down_proj"],
            LoraMethod.SelectTargets(new LoraConfig { TargetModulesRegex = @".*\.1\.mlp\.down_proj" }, m));
        Assert.Throws<ArgumentException>(() => LoraMethod.SelectTargets(new LoraConfig { TargetModulesRegex = @"down_proj" }, m)); // full match only
        Assert.Equal(["model.layers.1.self_attn.k_proj", "model.layers.1.mlp.up_proj"],
            LoraMethod.SelectTargets(new LoraConfig { TargetModules = ["self_attn.k_proj", "up_proj"], LayersToTransform = [1] }, m));
        Assert.Throws<ArgumentException>(() => LoraMethod.SelectTargets(new LoraConfig { TargetModules = ["proj"] }, m)); // suffix needs a dot: "proj" does not match q_proj
        using var g = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        Assert.Equal(8, LoraMethod.SelectTargets(new LoraConfig { TargetModules = [LoraConfig.AllLinear] }, g).Count);
    }

    [Fact]
    public void Lora_InitScaleAndDropout()
    {
        using var scope = NewDisposeScope();
        Assert.Equal(2.0, new LoraConfig { Rank = 4, Alpha = 8 }.Scale);
        Assert.Equal(4.0, new LoraConfig { Rank = 4, Alpha = 8, UseRsLora = true }.Scale);

        using var m1 = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        using var m2 = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var a = new LoraMethod(new LoraConfig { Rank = 8, TargetModules = [LoraConfig.AllLinear] }); a.Attach(m1, 5);
        var b = new LoraMethod(new LoraConfig { Rank = 8, TargetModules = [LoraConfig.AllLinear] }); b.Attach(m2, 5);
        for (int i = 0; i < a.Targets.Count; i++)
        {
            Assert.Equal(0.0, Fixtures.MaxAbsDiff(a.Targets[i].Adapter.A, b.Targets[i].Adapter.A)); // seeded
            Assert.Equal(0.0, a.Targets[i].Adapter.B.abs().max().item<float>());
            double bound = 1 / Math.Sqrt(a.Targets[i].Adapter.InFeatures);
            Assert.True(a.Targets[i].Adapter.A.abs().max().item<float>() <= bound);
            Assert.True(a.Targets[i].Adapter.A.abs().max().item<float>() > 0.8 * bound);
        }
        using var m3 = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var gauss = new LoraMethod(new LoraConfig { Rank = 8, Init = LoraInit.Gaussian, TargetModules = [LoraConfig.AllLinear] });
        gauss.Attach(m3, 5);
        var allA = cat(gauss.Targets.Select(t => t.Adapter.A.flatten()).ToList());
        Assert.InRange(allA.std().item<float>(), 0.11, 0.14); // σ = 1/r = 0.125

        // Dropout acts in training mode only.
        using var m4 = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var d = new LoraMethod(new LoraConfig { Rank = 4, Dropout = 0.5 });
        d.Attach(m4, 1);
        using (no_grad()) foreach (var t in d.Targets) t.Adapter.B.normal_(0, 0.1);
        var e1 = Logits(m4, d); var e2 = Logits(m4, d);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(e1, e2));
        m4.train();
        var t1 = Logits(m4, d);
        Assert.True(Fixtures.MaxAbsDiff(t1, e1) > 1e-4);
        m4.eval();
    }
}
