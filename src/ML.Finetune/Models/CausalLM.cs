using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>Inputs of one forward pass. Exactly one of InputIds / InputsEmbeds must be set.</summary>
public sealed class CausalLMInput
{
    /// <summary>[B, T] int64 token ids.</summary>
    public Tensor? InputIds { get; init; }
    /// <summary>[B, T, d] embeddings (e.g. token embeddings with soft prompts prepended).</summary>
    public Tensor? InputsEmbeds { get; init; }
    /// <summary>[B, S_past + T], 1 = attend. Null means all ones.</summary>
    public Tensor? AttentionMask { get; init; }
    /// <summary>[B, T]. Null means past_len + arange(T).</summary>
    public Tensor? PositionIds { get; init; }
    /// <summary>Appended to in place when given. May be pre-filled (prefix tuning).</summary>
    public KVCache? Cache { get; init; }
    public bool OutputHiddenStates { get; init; }
}

public sealed class CausalLMOutput
{
    /// <summary>[B, T, V]; float32, or float64 when the model computes in float64.</summary>
    public required Tensor Logits { get; init; }
    /// <summary>Embeddings, the output of each layer except the last, then the output of the final norm (HF convention).</summary>
    public IReadOnlyList<Tensor>? HiddenStates { get; init; }
}

/// <summary>A decoder-only language model whose parameter names equal the Hugging Face checkpoint keys.</summary>
public abstract class CausalLM : nn.Module
{
    protected CausalLM(string name, CausalLMConfig config) : base(name) => Config = config;

    public CausalLMConfig Config { get; }

    /// <summary>Token embedding only (no positions, no dropout).</summary>
    public abstract Tensor EmbedTokens(Tensor inputIds);

    public abstract CausalLMOutput Forward(CausalLMInput input);

    /// <summary>Number of key/value heads per layer in the cache (n_head for GPT-2).</summary>
    public int CacheHeads => Config.IsGpt2 ? Config.NumHeads : Config.NumKeyValueHeads;

    public KVCache NewCache() => new(Config.NumLayers);

    /// <summary>Every AdaptableLinear with its dotted parameter path.</summary>
    public IEnumerable<(string path, AdaptableLinear module)> NamedLinears() =>
        named_modules().Where(m => m.module is AdaptableLinear).Select(m => (m.name, (AdaptableLinear)m.module));

    /// <summary>Makes every AdaptableLinear ignore its adapter until disposed (the base model as a free reference).</summary>
    public IDisposable DisableAdapters()
    {
        var layers = NamedLinears().Select(l => (l.module, l.module.AdapterEnabled)).ToList();
        foreach (var (m, _) in layers) m.AdapterEnabled = false;
        return new Restore(() => { foreach (var (m, was) in layers) m.AdapterEnabled = was; });
    }

    sealed class Restore(Action undo) : IDisposable
    {
        Action? _undo = undo;
        public void Dispose() { _undo?.Invoke(); _undo = null; }
    }

    /// <summary>The floating dtype of the parameters (compute dtype).</summary>
    public ScalarType ComputeDType => parameters().First().dtype;
    public Device Device => parameters().First().device;

    /// <summary>Logits leave the model in float32 (also for bf16 compute); a float64 model keeps float64.</summary>
    protected static Tensor LogitsDType(Tensor logits) =>
        logits.dtype is ScalarType.Float32 or ScalarType.Float64 ? logits : logits.to_type(ScalarType.Float32);

    protected (Tensor h, long past, Tensor mask, Tensor positions) Prepare(CausalLMInput input)
    {
        if ((input.InputIds is null) == (input.InputsEmbeds is null))
            throw new ArgumentException("Set exactly one of InputIds or InputsEmbeds.");
        Tensor h = input.InputsEmbeds ?? EmbedTokens(input.InputIds!);
        // Trained soft prompts stay float32 (master weights) over a bf16/fp16 base: cast (differentiably) to the
        // compute dtype, as autocast would; otherwise LayerNorm/matmul would see mixed dtypes.
        if (h.dtype != ComputeDType && h.is_floating_point()) h = h.to_type(ComputeDType);
        long b = h.shape[0], t = h.shape[1];
        long past = input.Cache?.Length ?? 0;
        var mask = input.AttentionMask ?? torch.ones(b, past + t, dtype: ScalarType.Int64, device: h.device);
        if (mask.shape[0] != b || mask.shape[1] != past + t)
            throw new ArgumentException($"AttentionMask must be [{b}, {past + t}] (past {past} + new {t}), got [{string.Join(",", mask.shape)}]");
        var pos = input.PositionIds ?? (torch.arange(past, past + t, dtype: ScalarType.Int64, device: h.device).unsqueeze(0).expand(b, -1));
        return (h, past, mask, pos);
    }
}
