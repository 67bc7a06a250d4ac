using ML.Finetune.Adapters;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using static TorchSharp.torch;
using static ML.Finetune.Tests.Lora.LoraTestUtil;

namespace ML.Finetune.Tests.Lora;

/// <summary>LoRA against peft on tiny-llama: forward, gradients, three SGD steps.</summary>
public class LoraParityTests
{
    const string Ref = "tiny-llama-lora";

    [Fact]
    public void Lora_PeftAdapterOnTinyLlama_LogitsAndLossMatchPeft()
    {
        using var scope = NewDisposeScope();
        var (m, method) = LlamaWithFixtureAdapter();
        using var _ = m;
        Assert.Equal(4, method.Targets.Count);
        Assert.Equal(2.0, method.Config.Scale);
        var logits = Logits(m, method);
        Assert.True(Fixtures.MaxAbsDiff(logits, Fixtures.Ref(Ref, "logits_right")) < 1e-5, "logits");
        var loss = ParityTests.HfLoss(logits, Labels);
        Assert.True(Fixtures.MaxAbsDiff(loss, Fixtures.Ref(Ref, "loss_right")) < 1e-5, "loss");
        // UsePretrained turns the adapter off: base model logits.
        using (method.UsePretrained(m))
            Assert.True(Fixtures.MaxAbsDiff(Logits(m), Fixtures.Ref("tiny-llama", "logits_right")) < 1e-5, "pretrained logits");
        Assert.True(Fixtures.MaxAbsDiff(Logits(m), Fixtures.Ref(Ref, "logits_right")) < 1e-5, "adapter re-enabled");
    }

    [Fact]
    public void Lora_ThreeSgdSteps_ReproducePeftLossesGradientsAndTrainedAdapter()
    {
        using var scope = NewDisposeScope();
        var (m, method) = LlamaWithFixtureAdapter();
        using var _ = m;
        var sgdLosses = Fixtures.Ref(Ref, "sgd_losses");
        var byPeftKey = method.Targets.SelectMany(t => new[] { (PeftLoraIO.KeyA(t.Path), t.Adapter.A), (PeftLoraIO.KeyB(t.Path), t.Adapter.B) }).ToList();
        var opt = optim.SGD(method.TrainableParameters.Select(p => (TorchSharp.Modules.Parameter)p.Parameter), 0.1);
        for (int step = 0; step < 3; step++)
        {
            opt.zero_grad();
            var loss = Loss(m, method);
            Assert.True(Math.Abs(loss.item<float>() - sgdLosses[step].item<float>()) < 1e-4, $"loss before step {step + 1}: {loss.item<float>()} vs {sgdLosses[step].item<float>()}");
            loss.backward();
            if (step == 0)
            {
                foreach (var (key, p) in byPeftKey)
                {
                    double d = Fixtures.MaxAbsDiff(p.grad!, Fixtures.Ref(Ref, "grad_step0." + key));
                    Assert.True(d < 1e-5, $"grad {key}: {d}");
                }
                foreach (var (name, p) in m.named_parameters())
                    if (!name.Contains(".lora.")) Assert.True(p.grad is null || p.grad.IsInvalid, $"base parameter {name} got a gradient");
            }
            opt.step();
        }
        using (no_grad())
        {
            var final = Loss(m, method);
            Assert.True(Math.Abs(final.item<float>() - sgdLosses[3].item<float>()) < 1e-4, "loss after 3 steps");
            Assert.True(Fixtures.MaxAbsDiff(Logits(m, method), Fixtures.Ref(Ref, "trained_logits_right")) < 1e-4, "trained logits");
        }
        var trained = SafeTensors.Load(Path.Combine(Fixtures.Model("tiny-llama-lora-trained"), PeftLoraIO.WeightsFile));
        Assert.Equal(trained.Keys.OrderBy(k => k), byPeftKey.Select(k => k.Item1).OrderBy(k => k));
        foreach (var (key, p) in byPeftKey)
        {
            double d = Fixtures.MaxAbsDiff(p, trained[key]);
            Assert.True(d < 1e-4, $"trained {key}: {d}");
        }
    }

    [Fact]
    public void Lora_DistanceFromPretrained_EqualsSumOfDeltaWeightNorms()
    {
        using var scope = NewDisposeScope();
        var (m, method) = LlamaWithFixtureAdapter();
        using var _ = m;
        double expected = method.Targets.Sum(t => t.Adapter.DeltaWeight().pow(2).sum().item<float>());
        double got = method.DistanceFromPretrainedSquared().item<float>();
        Assert.True(Math.Abs(expected - got) < 1e-4 * expected, $"{got} vs {expected}");
        // It is differentiable with respect to A and B only.
        method.DistanceFromPretrainedSquared().backward();
        Assert.All(method.TrainableParameters, p => Assert.NotNull(p.Parameter.grad));
    }
}
