using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>
/// Grouped-query attention with RoPE: q/k/v_proj (or Phi-3's fused qkv_proj [q | k | v]), Qwen3/Gemma 3's per-head
/// q_norm/k_norm before RoPE, partial rotary (Phi-3), scale head_dim^-0.5 or Gemma's query_pre_attn_scalar^-0.5,
/// Gemma 2's score softcap, the layer's sliding window (mask and KV cache).
/// </summary>
public sealed class DecoderAttention : nn.Module
{
    public AdaptableLinear? q_proj, k_proj, v_proj, qkv_proj;
    public AdaptableLinear o_proj;
    public RMSNorm? q_norm, k_norm;
    readonly int _layer, _heads, _kv, _dim;
    readonly int? _window;
    readonly double _drop, _scale;
    readonly double? _softcap;
    readonly bool _defaultScale;

    public DecoderAttention(CausalLMConfig c, int layer) : base("DecoderAttention")
    {
        var f = c.GetFamily();
        _layer = layer; _heads = c.NumHeads; _kv = c.NumKeyValueHeads; _dim = c.HeadDim; _drop = c.AttentionDropout;
        _window = c.WindowOf(layer);
        _scale = c.AttentionScale;
        _defaultScale = _scale == Math.Pow(_dim, -0.5);
        _softcap = f.AttentionSoftcap ? c.AttnLogitSoftcapping : null;
        long q = (long)_heads * _dim, kv = (long)_kv * _dim;
        bool outputBias = c.AttentionBias && !f.QkvBiasOnly; // Qwen2: biases on q/k/v only
        if (f.FusedQkv) qkv_proj = new AdaptableLinear(c.HiddenSize, q + 2 * kv, c.AttentionBias);
        else
        {
            q_proj = new AdaptableLinear(c.HiddenSize, q, c.AttentionBias);
            k_proj = new AdaptableLinear(c.HiddenSize, kv, c.AttentionBias);
            v_proj = new AdaptableLinear(c.HiddenSize, kv, c.AttentionBias);
        }
        o_proj = new AdaptableLinear(q, c.HiddenSize, outputBias);
        if (f.QkNorm)
        {
            q_norm = new RMSNorm(_dim, c.NormEps, f.Gemma);
            k_norm = new RMSNorm(_dim, c.NormEps, f.Gemma);
        }
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, LayerInputs inputs)
    {
        long b = x.shape[0], t = x.shape[1];
        Tensor q, k, v;
        if (qkv_proj is not null)
        {
            var qkv = qkv_proj.forward(x);
            long nq = (long)_heads * _dim, nkv = (long)_kv * _dim;
            (q, k, v) = (qkv.narrow(-1, 0, nq), qkv.narrow(-1, nq, nkv), qkv.narrow(-1, nq + nkv, nkv));
        }
        else (q, k, v) = (q_proj!.forward(x), k_proj!.forward(x), v_proj!.forward(x));
        q = q.view(b, t, _heads, _dim);
        k = k.view(b, t, _kv, _dim);
        if (q_norm is not null) { q = q_norm.forward(q); k = k_norm!.forward(k); }
        q = RotaryEmbedding.Apply(q.transpose(1, 2), inputs.Cos, inputs.Sin);
        k = RotaryEmbedding.Apply(k.transpose(1, 2), inputs.Cos, inputs.Sin); // new keys only: cached/prefix keys are already final
        v = v.view(b, t, _kv, _dim).transpose(1, 2);
        if (inputs.Cache != null) (k, v) = inputs.Cache.Append(_layer, k, v);
        var mask = inputs.Masks.For(_window, k.shape[2], Attention.CanFuse(q.dtype, k.shape[2], _defaultScale, _softcap));
        int rep = _heads / _kv;
        var o = Attention.Compute(q, Attention.RepeatKv(k, rep), Attention.RepeatKv(v, rep), mask, _scale, divide: false,
            softmaxFloat32: true, _softcap, _drop, inputs.Training);
        return o_proj.forward(o.transpose(1, 2).reshape(b, t, _heads * _dim));
    }
}

/// <summary>down(act(gate(x)) · up(x)), with gate_proj/up_proj or Phi-3's fused gate_up_proj [gate | up].</summary>
public sealed class GatedMlp : nn.Module<Tensor, Tensor>
{
    public AdaptableLinear? gate_proj, up_proj, gate_up_proj;
    public AdaptableLinear down_proj;
    readonly string _act;
    readonly long _inter;

    public GatedMlp(CausalLMConfig c) : base("GatedMlp")
    {
        _act = c.HiddenAct; _inter = c.IntermediateSize;
        if (c.GetFamily().FusedGateUp) gate_up_proj = new AdaptableLinear(c.HiddenSize, 2L * c.IntermediateSize, c.MlpBias);
        else
        {
            gate_proj = new AdaptableLinear(c.HiddenSize, c.IntermediateSize, c.MlpBias);
            up_proj = new AdaptableLinear(c.HiddenSize, c.IntermediateSize, c.MlpBias);
        }
        down_proj = new AdaptableLinear(c.IntermediateSize, c.HiddenSize, c.MlpBias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        Tensor gate, up;
        if (gate_up_proj is not null)
        {
            var gu = gate_up_proj.forward(x);
            (gate, up) = (gu.narrow(-1, 0, _inter), gu.narrow(-1, _inter, _inter));
        }
        else (gate, up) = (gate_proj!.forward(x), up_proj!.forward(x));
        return down_proj.forward(Activate(gate, _act).mul(up));
    }

    /// <summary>
    /// silu; gelu (erf); gelu_pytorch_tanh and gelu_new, which are the same tanh approximation (computed with torch's
    /// fused kernel, see <see cref="Gpt2Mlp.GeluNew"/>).
    /// </summary>
    public static Tensor Activate(Tensor x, string name) => name switch
    {
        "silu" => nn.functional.silu(x),
        "gelu" => x.gelu(),
        "gelu_pytorch_tanh" or "gelu_new" => x.gelu(GELU.Approximate.tanh),
        _ => throw new NotSupportedException($"activation '{name}'"),
    };
}

/// <summary>
/// RMSNorm normalising in float32 as HF does: Llama-style w·x̂ (cast back before the weight), or Gemma's x̂·(1 + w)
/// computed in float32 and cast after (its weights start at 0).
/// </summary>
public sealed class RMSNorm : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    readonly double _eps;
    readonly bool _offset;

    public RMSNorm(long dim, double eps, bool offsetWeight = false) : base("RMSNorm")
    {
        weight = new Parameter(offsetWeight ? torch.zeros(dim) : torch.ones(dim));
        _eps = eps;
        _offset = offsetWeight;
        RegisterComponents();
    }

    /// <summary>True for Gemma's x̂·(1 + w): the weight's neutral value is 0, not 1.</summary>
    public bool OffsetWeight => _offset;

    public override Tensor forward(Tensor x)
    {
        var dtype = x.dtype;
        var x32 = x.to_type(ScalarType.Float32);
        var normed = x32.mul(x32.pow(2).mean([-1L], keepdim: true).add(_eps).rsqrt());
        return _offset
            ? normed.mul(weight.to_type(ScalarType.Float32).add(1.0)).to_type(dtype)
            : weight.mul(normed.to_type(dtype));
    }
}
