using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>An additive adapter on a linear layer (e.g. LoRA): output = W x + b + Delta(x).</summary>
public interface ILinearAdapter
{
    /// <summary>Submodule name the adapter's parameters are registered under (e.g. "lora").</summary>
    string Name => "adapter";
    Tensor Delta(Tensor x);
}

/// <summary>
/// The single linear layer used for every projection, so that adapters can be attached uniformly.
/// Parameters are <c>weight</c> [out, in] and optional <c>bias</c> [out], as in torch.nn.Linear.
/// </summary>
public sealed class AdaptableLinear : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    public Parameter? bias;
    ILinearAdapter? _adapter;

    public AdaptableLinear(long inFeatures, long outFeatures, bool hasBias, string name = "AdaptableLinear") : base(name)
    {
        weight = new Parameter(torch.zeros(outFeatures, inFeatures));
        register_parameter("weight", weight);
        if (hasBias)
        {
            bias = new Parameter(torch.zeros(outFeatures));
            register_parameter("bias", bias);
        }
    }

    public long InFeatures => weight.shape[1];
    public long OutFeatures => weight.shape[0];

    /// <summary>When false the adapter is ignored (the layer behaves as the frozen base layer).</summary>
    public bool AdapterEnabled { get; set; } = true;

    /// <summary>The attached adapter. If it is a Module it is registered as a submodule under its Name.</summary>
    public ILinearAdapter? Adapter
    {
        get => _adapter;
        set
        {
            if (_adapter is nn.Module) register_module(_adapter.Name, null!); // TorchSharp removes the entry on null
            _adapter = value;
            if (value is nn.Module m) register_module(value.Name, m);
        }
    }

    public override Tensor forward(Tensor x)
    {
        var y = nn.functional.linear(x, weight, bias);
        if (_adapter == null || !AdapterEnabled) return y;
        return y.add_(_adapter.Delta(x));
    }
}
