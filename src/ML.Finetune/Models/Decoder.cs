using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>
/// The decoder of every RoPE family we load (llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3_text): one
/// config-driven block whose differences come from <see cref="ModelFamily"/> and <see cref="CausalLMConfig"/> (fused
/// projections, q/k norms, Gemma's norms and scales, softcaps, sliding windows, rope per layer type). Parameter names
/// are the HF checkpoint keys (<c>model.layers.{i}.self_attn.q_proj.weight</c>, ..., <c>lm_head.weight</c> when untied).
/// </summary>
public sealed class DecoderLM : CausalLM
{
    public DecoderModel model;
    public AdaptableLinear? lm_head;
    readonly bool _scaleEmbeddings;

    public DecoderLM(CausalLMConfig config) : base(config.GetFamily().Architecture, config)
    {
        if (config.IsGpt2) throw new ArgumentException("config is gpt2; use Gpt2LMHeadModel");
        model = new DecoderModel(config);
        register_module("model", model);
        if (!config.TieWordEmbeddings)
        {
            lm_head = new AdaptableLinear(config.HiddenSize, config.VocabSize, false);
            register_module("lm_head", lm_head);
        }
        _scaleEmbeddings = config.GetFamily().Gemma;
    }

    /// <summary>
    /// The token embedding; Gemma multiplies it by √hidden, a float32 scalar cast to the weight dtype (as HF's scaled
    /// embedding module does, so the first hidden state and PEFT's prompt-tuning inputs match HF).
    /// </summary>
    public override Tensor EmbedTokens(Tensor inputIds)
    {
        var e = model.embed_tokens.forward(inputIds);
        if (!_scaleEmbeddings) return e;
        using var scale = torch.tensor((float)Math.Pow(Config.HiddenSize, 0.5), device: e.device).to_type(e.dtype);
        return e.mul(scale);
    }

    /// <summary>lm_head.weight, or the tied embedding (without a LoRA adapter on lm_head, which <see cref="CausalLM.LogitsFromHidden"/> applies).</summary>
    public override Tensor OutputWeight => lm_head?.weight ?? model.embed_tokens.weight!;

    protected override Tensor Project(Tensor hidden) => lm_head?.forward(hidden) ?? nn.functional.linear(hidden, model.embed_tokens.weight!);

    public override IEnumerable<Tensor> HeadParameters() => lm_head?.parameters() ?? [model.embed_tokens.weight!];

    public override CausalLMHiddenOutput ForwardHidden(CausalLMInput input)
    {
        var (h, _, pos, masks) = Prepare(input);
        var rope = new Dictionary<RopeParameters, (Tensor Cos, Tensor Sin)>(ReferenceEqualityComparer.Instance);
        long? seqLen = null; // max(position_ids) + 1 over the batch, read only by dynamic/longrope
        (Tensor, Tensor) CosSinFor(RopeParameters p)
        {
            if (rope.TryGetValue(p, out var cs)) return cs;
            if (p.Type is "dynamic" or "longrope") seqLen ??= pos.max().item<long>() + 1;
            var (inv, scaling) = RotaryEmbedding.InverseFrequencies(p, Config.HeadDim, Config.MaxPositionEmbeddings, seqLen ?? 0, pos.device);
            return rope[p] = RotaryEmbedding.CosSin(inv, scaling, pos, h.dtype);
        }
        var hidden = input.OutputHiddenStates ? new List<Tensor> { h } : null;
        for (int i = 0; i < Config.NumLayers; i++)
        {
            var (cos, sin) = CosSinFor(Config.RopeOf(i));
            var layer = (DecoderLayer)model.layers[i];
            var inputs = new LayerInputs(masks, cos, sin, input.Cache, training);
            h = RunLayer(layer, i, h, input.Cache, (x, cache) => layer.Forward(x, inputs with { Cache = cache }));
            if (hidden != null && i < Config.NumLayers - 1) hidden.Add(h);
        }
        h = model.norm.forward(h);
        hidden?.Add(h);
        return new CausalLMHiddenOutput { LastHiddenState = h, HiddenStates = hidden };
    }
}

/// <summary>What every layer of one forward shares.</summary>
public sealed record LayerInputs(AttentionMasks Masks, Tensor Cos, Tensor Sin, KVCache? Cache, bool Training);

public sealed class DecoderModel : nn.Module
{
    public Embedding embed_tokens;
    public ModuleList<nn.Module> layers;
    public RMSNorm norm;

    public DecoderModel(CausalLMConfig c) : base("DecoderModel")
    {
        bool gemma = c.GetFamily().Gemma;
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize);
        layers = new ModuleList<nn.Module>(Enumerable.Range(0, c.NumLayers).Select(i => (nn.Module)new DecoderLayer(c, i)).ToArray());
        norm = new RMSNorm(c.HiddenSize, c.NormEps, gemma);
        RegisterComponents();
    }
}

/// <summary>
/// Pre-norm block: h += attn(input_layernorm(h)); h += mlp(post_attention_layernorm(h)). Gemma's sandwich block
/// normalises the sub-layer outputs too: h += post_attention_layernorm(attn(input_layernorm(h))), then
/// h += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))) — so Gemma's post_attention_layernorm is not
/// Llama's (that role is pre_feedforward_layernorm's).
/// </summary>
public sealed class DecoderLayer : nn.Module
{
    public DecoderAttention self_attn;
    public GatedMlp mlp;
    public RMSNorm input_layernorm, post_attention_layernorm;
    public RMSNorm? pre_feedforward_layernorm, post_feedforward_layernorm;
    readonly double _residualDropout;

    public DecoderLayer(CausalLMConfig c, int layer) : base("DecoderLayer")
    {
        var f = c.GetFamily();
        self_attn = new DecoderAttention(c, layer);
        mlp = new GatedMlp(c);
        input_layernorm = new RMSNorm(c.HiddenSize, c.NormEps, f.Gemma);
        post_attention_layernorm = new RMSNorm(c.HiddenSize, c.NormEps, f.Gemma);
        if (f.Gemma)
        {
            pre_feedforward_layernorm = new RMSNorm(c.HiddenSize, c.NormEps, true);
            post_feedforward_layernorm = new RMSNorm(c.HiddenSize, c.NormEps, true);
        }
        _residualDropout = c.ResidualDropout;
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, LayerInputs inputs)
    {
        if (pre_feedforward_layernorm is not null)
        {
            x = x.add(post_attention_layernorm.forward(self_attn.Forward(input_layernorm.forward(x), inputs)));
            return x.add(post_feedforward_layernorm!.forward(mlp.forward(pre_feedforward_layernorm.forward(x))));
        }
        x = x.add(Dropout(self_attn.Forward(input_layernorm.forward(x), inputs), inputs.Training));
        return x.add(Dropout(mlp.forward(post_attention_layernorm.forward(x)), inputs.Training));
    }

    /// <summary>Phi-3's resid_pdrop on each sub-layer output (0 elsewhere).</summary>
    Tensor Dropout(Tensor t, bool train) => train && _residualDropout > 0 ? nn.functional.dropout(t, _residualDropout, true) : t;
}
