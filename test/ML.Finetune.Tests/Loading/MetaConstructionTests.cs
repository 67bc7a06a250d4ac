using ML.Finetune.Models;
using ML.Finetune.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Loading;

/// <summary>Building on the meta device is thread-local and allocates nothing; materializing reaches every parameter.</summary>
public class MetaConstructionTests
{
    [Fact]
    public void Build_PutsEveryTensorOnMeta_OnThisThreadOnly_AndUndoesItself()
    {
        Assert.True(MetaConstruction.IsThreadLocal, "libc10's thread-local dispatch keys were not found on this platform");
        DeviceType other = DeviceType.META;
        var (zeros, embedding, explicitCpu) = MetaConstruction.Build(() =>
        {
            var t = new Thread(() => { using var x = torch.zeros(2); other = x.device_type; });
            t.Start();
            t.Join();
            // nn.Embedding builds and fills its weight in C++; an explicit device is overridden too.
            return (torch.zeros(3, 4), nn.Embedding(50_000, 1024), torch.ones(2, device: CPU));
        });
        Assert.Equal(DeviceType.CPU, other);
        Assert.Equal(DeviceType.META, zeros.device_type);
        Assert.Equal(DeviceType.META, embedding.weight!.device_type);
        Assert.Equal(DeviceType.META, explicitCpu.device_type);
        // Afterwards, factories and ops on CPU tensors run on the CPU again (no meta key left on this thread).
        using var a = torch.ones(3);
        using var b = a.index_select(0, torch.tensor(new long[] { 0, 2 })).add(1);
        Assert.Equal(DeviceType.CPU, b.device_type);
        Assert.Equal(4f, b.sum().item<float>());
    }

    [Fact]
    public void Materialize_ReplacesParametersHeldByPropertiesFieldsAndSharing_AndForwardRuns()
    {
        using var scope = NewDisposeScope();
        var config = CausalLMConfig.Load(Fixtures.Model("tiny-gpt2"));
        var model = MetaConstruction.Build(() => new Gpt2LMHeadModel(config));
        Assert.All(model.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        int i = 0;
        ModuleMaterializer.Materialize(model, (name, p) => torch.full(p.shape, 0.01 * ++i, ScalarType.BFloat16));
        foreach (var (name, p) in model.named_parameters())
        {
            Assert.Equal(DeviceType.CPU, p.device_type);
            Assert.Equal(ScalarType.BFloat16, p.dtype);
        }
        // Fields and native modules see the new tensors: TorchSharp's LayerNorm (property), nn.Embedding (native),
        // our AdaptableLinear (field + registration).
        var block = (Gpt2Block)model.transformer.h[0];
        Assert.Equal(block.ln_1.weight.Handle, model.named_parameters().First(p => p.name == "transformer.h.0.ln_1.weight").parameter.Handle);
        Assert.Equal(DeviceType.CPU, block.attn.c_attn.weight.device_type);
        Assert.Equal(DeviceType.CPU, model.transformer.wte.weight!.device_type);
        var logits = model.Forward(new CausalLMInput { InputIds = torch.tensor(new long[,] { { 1, 2, 3 } }) }).Logits;
        Assert.Equal(new long[] { 1, 3, config.VocabSize }, logits.shape);
        Assert.False(logits.isnan().any().item<bool>());
    }

    sealed class Shared : nn.Module<Tensor, Tensor>
    {
        public Parameter w;
        public readonly Linear a, b;
        public Shared() : base("Shared")
        {
            w = new Parameter(torch.zeros(4));
            a = nn.Linear(4, 4);
            b = nn.Linear(4, 4);
            b.weight = a.weight; // one parameter object in two modules
            RegisterComponents();
        }
        public override Tensor forward(Tensor x) => b.forward(a.forward(x.mul(w)));
    }

    [Fact]
    public void Materialize_KeepsASharedParameterShared()
    {
        var m = MetaConstruction.Build(() => new Shared());
        var made = new List<string>();
        ModuleMaterializer.Materialize(m, (name, p) => { made.Add(name); return torch.ones(p.shape); });
        Assert.Equal(m.a.weight.Handle, m.b.weight.Handle);
        Assert.Single(made, n => n.EndsWith(".weight"));
        Assert.Equal(DeviceType.CPU, m.w.device_type);
        Assert.Equal(DeviceType.CPU, m.forward(torch.ones(1, 4)).device_type);
    }

    sealed class ComputesABuffer : nn.Module<Tensor, Tensor>
    {
        public Parameter weight;
        public ComputesABuffer() : base("ComputesABuffer")
        {
            weight = new Parameter(torch.zeros(4));
            register_buffer("inv_freq", torch.arange(0, 4, 1).to_type(ScalarType.Float32).reciprocal());
            RegisterComponents();
        }
        public override Tensor forward(Tensor x) => x.mul(weight);
    }

    [Fact]
    public void Materialize_RefusesAModuleWhoseConstructorComputedABuffer()
    {
        var m = MetaConstruction.Build(() => new ComputesABuffer());
        var e = Assert.Throws<InvalidOperationException>(() => ModuleMaterializer.Materialize(m, (_, p) => torch.ones(p.shape)));
        Assert.Contains("inv_freq", e.Message);
        Assert.Contains("meta", e.Message);
    }
}
