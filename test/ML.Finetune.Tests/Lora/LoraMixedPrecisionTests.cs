using ML.Finetune.Adapters;
using ML.Finetune.Models;
using static TorchSharp.torch;
using static ML.Finetune.Tests.Lora.LoraTestUtil;

namespace ML.Finetune.Tests.Lora;

public class LoraMixedPrecisionTests
{
    [Fact]
    public void Lora_Bf16FrozenBase_Fp32Adapters_ScoreAndTrain()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"), new ModelLoadOptions { DType = ScalarType.BFloat16 });
        var method = PeftLoraIO.Import(m, Fixtures.Model("tiny-llama-lora"));
        Assert.All(method.TrainableParameters, p => Assert.Equal(ScalarType.Float32, p.Parameter.dtype));
        Assert.All(method.Targets, t => Assert.Equal(ScalarType.BFloat16, t.Layer.weight.dtype));
        var logits = Logits(m, method);
        Assert.Equal(ScalarType.Float32, logits.dtype);
        double d = Fixtures.MaxAbsDiff(logits, Fixtures.Ref("tiny-llama-lora", "logits_right"));
        Assert.True(d < 0.15, $"bf16 logits diff {d}"); // bf16 resolution, not parity
        var loss = Loss(m, method);
        loss.backward();
        Assert.All(method.TrainableParameters, p => Assert.Equal(ScalarType.Float32, p.Parameter.grad!.dtype));
        Assert.All(m.named_parameters().Where(p => !p.name.Contains(".lora.")), p => Assert.Null(p.parameter.grad));
        // Gradients agree with the float32 reference to bf16 accuracy.
        var g = method.Targets[0].Adapter.B.grad!;
        var gRef = Fixtures.Ref("tiny-llama-lora", "grad_step0." + PeftLoraIO.KeyB(method.Targets[0].Path));
        double rel = Fixtures.MaxAbsDiff(g, gRef) / gRef.abs().max().item<float>();
        Assert.True(rel < 0.1, $"relative grad diff {rel}");
    }
}
