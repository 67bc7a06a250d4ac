using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>
/// GPT-2 (GPT2LMHeadModel layout). Every GPT-2 quirk lives here, and only here:
/// <list type="number">
/// <item>HF stores Conv1D weights (c_attn, c_proj, c_fc) as [in, out]; we keep nn.Linear's [out, in] and transpose
///   on load and on export (<see cref="Conv1DWeights"/>, <see cref="IsConv1DWeight"/>).</item>
/// <item>The head is tied: there is no <c>lm_head.weight</c> in the file, logits = h · wteᵀ, and the parameter
///   exists once (<c>transformer.wte.weight</c>).</item>
/// <item>Positions are learned: <c>wpe</c> is indexed by the position ids (so prefix tuning shifts them too).</item>
/// <item>Activation is gelu_new (tanh approximation), computed with torch's fused tanh-approximate gelu.</item>
/// <item>LayerNorm has a bias; attention scores are divided by sqrt(head_dim); softmax runs in the compute dtype.</item>
/// <item>Old checkpoints may carry non-persistent buffers <c>attn.bias</c>/<c>attn.masked_bias</c>; they are ignored.</item>
/// </list>
/// </summary>
public sealed class Gpt2LMHeadModel : CausalLM
{
    public Gpt2Model transformer;

    public Gpt2LMHeadModel(CausalLMConfig config) : base("GPT2LMHeadModel", config)
    {
        if (!config.IsGpt2) throw new ArgumentException("config is not gpt2");
        transformer = new Gpt2Model(config);
        RegisterComponents();
    }

    /// <summary>Names of weights HF stores transposed ([in, out]).</summary>
    public static readonly string[] Conv1DWeights = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"];

    public static bool IsConv1DWeight(string key) => key.StartsWith("transformer.h.") && Conv1DWeights.Any(key.EndsWith);

    /// <summary>Checkpoint keys that are buffers in some GPT-2 files and carry no weights.</summary>
    public static bool IsIgnoredKey(string key) => key.EndsWith(".attn.bias") || key.EndsWith(".attn.masked_bias");

    public override Tensor EmbedTokens(Tensor inputIds) => transformer.wte.forward(inputIds);

    public override Tensor OutputWeight => transformer.wte.weight!;

    public override CausalLMHiddenOutput ForwardHidden(CausalLMInput input)
    {
        var (x, _, pos, masks) = Prepare(input);
        var h = x.add(transformer.wpe.forward(pos));
        if (training && Config.EmbeddingDropout > 0) h = nn.functional.dropout(h, Config.EmbeddingDropout, true);
        var hidden = input.OutputHiddenStates ? new List<Tensor> { h } : null;
        for (int i = 0; i < Config.NumLayers; i++)
        {
            var block = (Gpt2Block)transformer.h[i];
            int layer = i;
            h = RunLayer(block, i, h, input.Cache, (x, cache) => block.Forward(x, masks, cache, layer, training));
            if (hidden != null && i < Config.NumLayers - 1) hidden.Add(h);
        }
        h = transformer.ln_f.forward(h);
        hidden?.Add(h);
        return new CausalLMHiddenOutput { LastHiddenState = h, HiddenStates = hidden };
    }
}

public sealed class Gpt2Model : nn.Module
{
    public Embedding wte, wpe;
    public ModuleList<nn.Module> h;
    public LayerNorm ln_f;

    public Gpt2Model(CausalLMConfig c) : base("GPT2Model")
    {
        wte = nn.Embedding(c.VocabSize, c.HiddenSize);
        wpe = nn.Embedding(c.MaxPositionEmbeddings, c.HiddenSize);
        h = new ModuleList<nn.Module>(Enumerable.Range(0, c.NumLayers).Select(_ => (nn.Module)new Gpt2Block(c)).ToArray());
        ln_f = nn.LayerNorm(c.HiddenSize, c.NormEps);
        RegisterComponents();
    }
}

public sealed class Gpt2Block : nn.Module
{
    public LayerNorm ln_1, ln_2;
    public Gpt2Attention attn;
    public Gpt2Mlp mlp;
    readonly double _resid;

    public Gpt2Block(CausalLMConfig c) : base("GPT2Block")
    {
        ln_1 = nn.LayerNorm(c.HiddenSize, c.NormEps);
        attn = new Gpt2Attention(c);
        ln_2 = nn.LayerNorm(c.HiddenSize, c.NormEps);
        mlp = new Gpt2Mlp(c);
        _resid = c.ResidualDropout;
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, AttentionMasks masks, KVCache? cache, int layer, bool train)
    {
        var a = attn.Forward(ln_1.forward(x), masks, cache, layer, train);
        if (train && _resid > 0) a = nn.functional.dropout(a, _resid, true);
        x = x.add(a);
        var m = mlp.forward(ln_2.forward(x));
        if (train && _resid > 0) m = nn.functional.dropout(m, _resid, true);
        return x.add(m);
    }
}

public sealed class Gpt2Attention : nn.Module
{
    public AdaptableLinear c_attn, c_proj;
    readonly int _heads, _dim;
    readonly double _drop;

    public Gpt2Attention(CausalLMConfig c) : base("GPT2Attention")
    {
        c_attn = new AdaptableLinear(c.HiddenSize, 3 * c.HiddenSize, true);
        c_proj = new AdaptableLinear(c.HiddenSize, c.HiddenSize, true);
        _heads = c.NumHeads; _dim = c.HeadDim; _drop = c.AttentionDropout;
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, AttentionMasks masks, KVCache? cache, int layer, bool train)
    {
        long b = x.shape[0], t = x.shape[1];
        var qkv = c_attn.forward(x).split(x.shape[2], 2);
        Tensor Heads(Tensor z) => z.view(b, t, _heads, _dim).transpose(1, 2);
        Tensor q = Heads(qkv[0]), k = Heads(qkv[1]), v = Heads(qkv[2]);
        if (cache != null) (k, v) = cache.Append(layer, k, v);
        var mask = masks.For(null, k.shape[2], Attention.CanFuse(q.dtype, k.shape[2], defaultScale: true, softcap: null));
        var o = Attention.Compute(q, k, v, mask, gpt2Scaling: true, _drop, train);
        return c_proj.forward(o.transpose(1, 2).reshape(b, t, _heads * _dim));
    }
}

public sealed class Gpt2Mlp : nn.Module<Tensor, Tensor>
{
    public AdaptableLinear c_fc, c_proj;

    public Gpt2Mlp(CausalLMConfig c) : base("GPT2MLP")
    {
        c_fc = new AdaptableLinear(c.HiddenSize, c.IntermediateSize, true);
        c_proj = new AdaptableLinear(c.IntermediateSize, c.HiddenSize, true);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => c_proj.forward(GeluNew(c_fc.forward(x)));

    /// <summary>
    /// HF NewGELUActivation, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), is exactly torch's gelu(approximate="tanh"):
    /// one fused kernel forward and backward instead of eight element-wise passes each way (HF's own
    /// gelu_pytorch_tanh makes the same swap). Results differ from the written-out formula by float rounding only.
    /// </summary>
    public static Tensor GeluNew(Tensor x) => x.gelu(GELU.Approximate.tanh);
}
