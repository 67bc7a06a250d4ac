using ML.Finetune.Training;
using ML.Finetune.Adapters;
using ML.Finetune.Models;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Lora;

internal static class LoraTestUtil
{
    public static Tensor Ids => Fixtures.Input("input_ids_right");
    public static Tensor Mask => Fixtures.Input("attention_mask_right");
    public static Tensor Labels => Fixtures.Input("labels_right");

    public static Tensor Logits(CausalLM m, LoraMethod? method = null) =>
        method != null ? method.Logits(m, Ids, Mask) : m.Forward(new CausalLMInput { InputIds = Ids, AttentionMask = Mask }).Logits;

    public static Tensor Loss(CausalLM m, LoraMethod method) => ParityTests.HfLoss(method.Logits(m, Ids, Mask), Labels);

    /// <summary>tiny-llama with the fixture's PEFT adapter attached.</summary>
    public static (CausalLM Model, LoraMethod Method) LlamaWithFixtureAdapter(string adapter = "tiny-llama-lora")
    {
        var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        return (m, PeftLoraIO.Import(m, Fixtures.Model(adapter)));
    }

    public static void Sgd(CausalLM m, LoraMethod method, int steps, double lr, Action<int, Tensor>? onLoss = null)
    {
        var opt = optim.SGD(method.TrainableParameters.Select(p => (TorchSharp.Modules.Parameter)p.Parameter), lr);
        for (int i = 0; i < steps; i++)
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var loss = Loss(m, method);
            onLoss?.Invoke(i, loss);
            loss.backward();
            opt.step();
        }
    }
}
