using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>
/// Llama-family decoder (llama, mistral, qwen2): RMSNorm, RoPE (rotate_half convention), grouped-query attention,
/// SiLU-gated MLP. Qwen2 adds q/k/v biases; the head is tied or untied per config.
/// </summary>
public sealed class LlamaForCausalLM : CausalLM
{
    public LlamaModel model;
    public AdaptableLinear? lm_head;

    public LlamaForCausalLM(CausalLMConfig config) : base(config.ModelType switch
    {
        "qwen2" => "Qwen2ForCausalLM", "mistral" => "MistralForCausalLM", _ => "LlamaForCausalLM",
    }, config)
    {
        if (config.IsGpt2) throw new ArgumentException("config is gpt2");
        model = new LlamaModel(config);
        register_module("model", model);
        if (!config.TieWordEmbeddings)
        {
            lm_head = new AdaptableLinear(config.HiddenSize, config.VocabSize, false);
            register_module("lm_head", lm_head);
        }
    }

    public override Tensor EmbedTokens(Tensor inputIds) => model.embed_tokens.forward(inputIds);

    public override CausalLMOutput Forward(CausalLMInput input)
    {
        var (h, past, mask, pos) = Prepare(input);
        var additive = Attention.MaskFor(mask, past, h.shape[1], h.dtype);
        var (cos, sin) = Rope(pos, h.dtype);
        var hidden = input.OutputHiddenStates ? new List<Tensor> { h } : null;
        for (int i = 0; i < Config.NumLayers; i++)
        {
            h = ((LlamaDecoderLayer)model.layers[i]).Forward(h, additive, cos, sin, input.Cache, i, training);
            if (hidden != null && i < Config.NumLayers - 1) hidden.Add(h);
        }
        h = model.norm.forward(h);
        hidden?.Add(h);
        var logits = (lm_head != null ? lm_head.forward(h) : nn.functional.linear(h, model.embed_tokens.weight!));
        return new CausalLMOutput { Logits = LogitsDType(logits), HiddenStates = hidden };
    }

    /// <summary>
    /// cos/sin [B, 1, T, D] for the given positions. Computed in float32 and then cast, exactly like HF
    /// (which also does this in float64 runs), so float64 parity stays tight.
    /// </summary>
    (Tensor cos, Tensor sin) Rope(Tensor positions, ScalarType dtype)
    {
        int d = Config.HeadDim;
        var exps = torch.arange(0, d, 2, dtype: ScalarType.Int64, device: positions.device).to_type(ScalarType.Float32).div(d);
        var invFreq = torch.pow(Config.RopeTheta, exps).reciprocal();                                // [D/2]
        var freqs = positions.to_type(ScalarType.Float32).unsqueeze(-1).mul(invFreq);                 // [B,T,D/2]
        var emb = torch.cat([freqs, freqs], -1);
        return (emb.cos().to_type(dtype).unsqueeze(1), emb.sin().to_type(dtype).unsqueeze(1));
    }
}

public sealed class LlamaModel : nn.Module
{
    public Embedding embed_tokens;
    public ModuleList<nn.Module> layers;
    public RMSNorm norm;

    public LlamaModel(CausalLMConfig c) : base("LlamaModel")
    {
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize);
        layers = new ModuleList<nn.Module>(Enumerable.Range(0, c.NumLayers).Select(_ => (nn.Module)new LlamaDecoderLayer(c)).ToArray());
        norm = new RMSNorm(c.HiddenSize, c.NormEps);
        RegisterComponents();
    }
}

/// <summary>x · rsqrt(mean(x²) + eps) · weight, with the normalisation in float32 (as HF does).</summary>
public sealed class RMSNorm : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    readonly double _eps;

    public RMSNorm(long dim, double eps) : base("RMSNorm")
    {
        weight = new Parameter(torch.ones(dim));
        _eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var dtype = x.dtype;
        var x32 = x.to_type(ScalarType.Float32);
        var normed = x32.mul(x32.pow(2).mean([-1L], keepdim: true).add(_eps).rsqrt());
        return weight.mul(normed.to_type(dtype));
    }
}

public sealed class LlamaDecoderLayer : nn.Module
{
    public LlamaAttention self_attn;
    public LlamaMlp mlp;
    public RMSNorm input_layernorm, post_attention_layernorm;

    public LlamaDecoderLayer(CausalLMConfig c) : base("LlamaDecoderLayer")
    {
        self_attn = new LlamaAttention(c);
        mlp = new LlamaMlp(c);
        input_layernorm = new RMSNorm(c.HiddenSize, c.NormEps);
        post_attention_layernorm = new RMSNorm(c.HiddenSize, c.NormEps);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? mask, Tensor cos, Tensor sin, KVCache? cache, int layer, bool train)
    {
        x = x.add(self_attn.Forward(input_layernorm.forward(x), mask, cos, sin, cache, layer, train));
        return x.add(mlp.forward(post_attention_layernorm.forward(x)));
    }
}

public sealed class LlamaAttention : nn.Module
{
    public AdaptableLinear q_proj, k_proj, v_proj, o_proj;
    readonly int _heads, _kv, _dim;
    readonly double _drop;

    public LlamaAttention(CausalLMConfig c) : base("LlamaAttention")
    {
        _heads = c.NumHeads; _kv = c.NumKeyValueHeads; _dim = c.HeadDim; _drop = c.AttentionDropout;
        q_proj = new AdaptableLinear(c.HiddenSize, _heads * _dim, c.AttentionBias);
        k_proj = new AdaptableLinear(c.HiddenSize, _kv * _dim, c.AttentionBias);
        v_proj = new AdaptableLinear(c.HiddenSize, _kv * _dim, c.AttentionBias);
        // Qwen2 has biases on q/k/v only; Llama's attention_bias also covers o_proj.
        o_proj = new AdaptableLinear(_heads * _dim, c.HiddenSize, c.AttentionBias && c.ModelType != "qwen2");
        RegisterComponents();
    }

    static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        return torch.cat([x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)], -1);
    }

    public Tensor Forward(Tensor x, Tensor? mask, Tensor cos, Tensor sin, KVCache? cache, int layer, bool train)
    {
        long b = x.shape[0], t = x.shape[1];
        var q = q_proj.forward(x).view(b, t, _heads, _dim).transpose(1, 2);
        var k = k_proj.forward(x).view(b, t, _kv, _dim).transpose(1, 2);
        var v = v_proj.forward(x).view(b, t, _kv, _dim).transpose(1, 2);
        q = q.mul(cos).add(RotateHalf(q).mul(sin));
        k = k.mul(cos).add(RotateHalf(k).mul(sin)); // new keys only: cached/prefix keys are already final
        if (cache != null) (k, v) = cache.Append(layer, k, v);
        int rep = _heads / _kv;
        var o = Attention.Compute(q, Attention.RepeatKv(k, rep), Attention.RepeatKv(v, rep), mask, gpt2Scaling: false, _drop, train);
        return o_proj.forward(o.transpose(1, 2).reshape(b, t, _heads * _dim));
    }
}

public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    public AdaptableLinear gate_proj, up_proj, down_proj;

    public LlamaMlp(CausalLMConfig c) : base("LlamaMLP")
    {
        gate_proj = new AdaptableLinear(c.HiddenSize, c.IntermediateSize, c.MlpBias);
        up_proj = new AdaptableLinear(c.HiddenSize, c.IntermediateSize, c.MlpBias);
        down_proj = new AdaptableLinear(c.IntermediateSize, c.HiddenSize, c.MlpBias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) =>
        down_proj.forward(nn.functional.silu(gate_proj.forward(x)).mul(up_proj.forward(x)));
}
