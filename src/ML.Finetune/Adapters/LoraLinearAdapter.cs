using ML.Finetune.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ML.Finetune.Adapters;

/// <summary>
/// One LoRA adapter on an <see cref="AdaptableLinear"/>: Delta(x) = s·B·A·dropout(x), added to W x + b by the layer.
/// Registered on the layer as submodule "lora", so its parameters are <c>&lt;layer path&gt;.lora.A</c> [r, in] and
/// <c>&lt;layer path&gt;.lora.B</c> [out, r] (PEFT calls them <c>lora_A.weight</c> / <c>lora_B.weight</c>).
/// A and B are float32 when the base layer is float16/bfloat16 (frozen low-precision base, full-precision adapter);
/// otherwise they use the base dtype.
/// </summary>
public sealed class LoraLinearAdapter : nn.Module, ILinearAdapter
{
    public const string ModuleName = "lora";

    public Parameter A;
    public Parameter B;

    public LoraLinearAdapter(long inFeatures, long outFeatures, int rank, double scale, double dropout,
        ScalarType dtype = ScalarType.Float32, Device? device = null) : base(ModuleName)
    {
        if (rank <= 0 || rank > Math.Min(inFeatures, outFeatures))
            throw new ArgumentOutOfRangeException(nameof(rank), rank,
                $"LoRA rank must be in [1, min(in, out)] = [1, {Math.Min(inFeatures, outFeatures)}] for a {inFeatures}→{outFeatures} layer, got {rank}");
        Rank = rank; Scale = scale; DropoutP = dropout;
        A = new Parameter(torch.zeros(rank, inFeatures, dtype: dtype, device: device));
        B = new Parameter(torch.zeros(outFeatures, rank, dtype: dtype, device: device));
        register_parameter("A", A);
        register_parameter("B", B);
    }

    string ILinearAdapter.Name => ModuleName;

    public int Rank { get; }
    public double Scale { get; }
    public double DropoutP { get; }
    public long InFeatures => A.shape[1];
    public long OutFeatures => B.shape[0];

    /// <summary>Fills A from <paramref name="generator"/> (B = 0).</summary>
    public void Initialize(LoraInit init, Generator generator)
    {
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Tensor a;
        if (init == LoraInit.Gaussian)
            a = torch.randn(A.shape, generator: generator).mul_(1.0 / Rank);
        else
        {
            // kaiming_uniform_(a=√5): gain = √(2/(1+5)), bound = gain·√(3/fan_in) = 1/√fan_in.
            double bound = 1.0 / Math.Sqrt(InFeatures);
            a = torch.rand(A.shape, generator: generator).mul_(2 * bound).sub_(bound);
        }
        A.copy_(a);
        B.zero_();
    }

    public Tensor Delta(Tensor x)
    {
        // Over a bf16 base, cast the small A [r, in] and B [out, r] to the activations' dtype (as autocast would),
        // not the [tokens, in] activations and [tokens, out] result to float32 and back: gradients still reach the
        // float32 A and B through the casts. The scale is folded into B's copy, an [out, r] op instead of [tokens, out].
        var a = A.dtype == x.dtype ? A : A.to_type(x.dtype);
        var b = (B.dtype == x.dtype ? B : B.to_type(x.dtype)).mul(Scale);
        var h = DropoutP > 0 && training ? nn.functional.dropout(x, DropoutP, training: true) : x;
        return nn.functional.linear(nn.functional.linear(h, a), b);
    }

    /// <summary>s·B·A [out, in], the exact change this adapter makes to the layer's weight.</summary>
    public Tensor DeltaWeight() => torch.matmul(B, A).mul_(Scale);
}
