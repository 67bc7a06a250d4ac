using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>Inputs of one forward pass. Exactly one of InputIds / InputsEmbeds must be set.</summary>
public sealed class CausalLMInput
{
    /// <summary>[B, T] int64 token ids.</summary>
    public Tensor? InputIds { get; init; }
    /// <summary>
    /// [B, T, d] embeddings as the first layer sees them (e.g. token embeddings from <see cref="CausalLM.EmbedTokens"/>
    /// with soft prompts prepended). The model does not scale them again (Gemma's √hidden is part of EmbedTokens, as in
    /// transformers 5.x).
    /// </summary>
    public Tensor? InputsEmbeds { get; init; }
    /// <summary>[B, S_past + T], 1 = attend. Null means all ones.</summary>
    public Tensor? AttentionMask { get; init; }
    /// <summary>[B, T]. Null means past_len + arange(T).</summary>
    public Tensor? PositionIds { get; init; }
    /// <summary>
    /// [B, T] int64 or null: sequence packing (document masking). A key is visible from a query only when both carry
    /// the same id (on top of causality, padding and sliding windows). Give each packed sequence restarting
    /// <see cref="PositionIds"/> and a packed row computes what its sequences would alone (batch-wide rope rules such
    /// as dynamic NTK aside, which see the whole batch's positions). Not allowed with a non-empty <see cref="Cache"/>,
    /// unless <see cref="PastIsSharedPrefix"/>.
    /// </summary>
    public Tensor? SequenceIds { get; init; }
    /// <summary>
    /// With <see cref="SequenceIds"/>: the cache's entries are a prefix that every packed sequence sees in front of
    /// itself (prefix tuning's virtual keys and values), not earlier tokens of one sequence. Each sequence then attends
    /// to the whole prefix and its own tokens, and a sliding window counts from the prefix through the sequence's
    /// own tokens, as for that sequence alone after the prefix.
    /// </summary>
    public bool PastIsSharedPrefix { get; init; }
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

/// <summary>What the backbone (everything up to and including the final norm) returns.</summary>
public sealed class CausalLMHiddenOutput
{
    /// <summary>[B, T, d] final-norm hidden states in the compute dtype: the LM head's input.</summary>
    public required Tensor LastHiddenState { get; init; }
    /// <summary>As <see cref="CausalLMOutput.HiddenStates"/>, when <see cref="CausalLMInput.OutputHiddenStates"/> is set.</summary>
    public IReadOnlyList<Tensor>? HiddenStates { get; init; }
}

/// <summary>
/// A decoder-only language model whose parameter names equal the Hugging Face checkpoint keys. The forward is split
/// into <see cref="ForwardHidden"/> (the backbone) and <see cref="LogitsFromHidden"/> (the LM head), and
/// <see cref="Forward"/> is exactly one after the other, so that a loss can run the head on any subset of positions.
/// </summary>
public abstract class CausalLM : nn.Module
{
    protected CausalLM(string name, CausalLMConfig config) : base(name) => Config = config;

    public CausalLMConfig Config { get; }

    /// <summary>
    /// The parameters (by name) that <see cref="CausalLMFactory.LoadPretrained"/> loaded as the mapped checkpoint file
    /// itself, with where they are stored: full finetuning maps them again as its θ_p instead of copying them.
    /// Empty for models built otherwise.
    /// </summary>
    public IReadOnlyDictionary<string, Checkpoints.MappedWeight> MappedWeights { get; internal set; } = new Dictionary<string, Checkpoints.MappedWeight>();

    /// <summary>Token embedding as the first layer sees it (no positions, no dropout; Gemma's × √hidden included).</summary>
    public abstract Tensor EmbedTokens(Tensor inputIds);

    /// <summary>The backbone: embeddings through the final norm, [B, T, d] in the compute dtype.</summary>
    public abstract CausalLMHiddenOutput ForwardHidden(CausalLMInput input);

    /// <summary>
    /// The LM head on hidden states [..., d] (any leading shape, e.g. [N, d] for selected positions): the output
    /// projection (tied or not), then Gemma's final-logit softcap. Float32 logits (float64 for a float64 model).
    /// </summary>
    public Tensor LogitsFromHidden(Tensor hidden)
    {
        var logits = LogitsDType(Project(hidden));
        return Config.FinalLogitSoftcapping is double cap ? logits.div(cap).tanh().mul(cap) : logits;
    }

    /// <summary>The LM head's weight [V, d]: lm_head.weight, or the token embedding when tied.</summary>
    public abstract Tensor OutputWeight { get; }

    /// <summary>The parameters <see cref="LogitsFromHidden"/> reads: <see cref="OutputWeight"/> and, on an untied
    /// lm_head, its adapter's (LoRA on lm_head). A chunked loss differentiates the head with respect to these.</summary>
    public virtual IEnumerable<Tensor> HeadParameters() => [OutputWeight];

    /// <summary>hidden · OutputWeightᵀ in the compute dtype (a model with an adaptable head applies its adapter here).</summary>
    protected virtual Tensor Project(Tensor hidden) => nn.functional.linear(hidden, OutputWeight);

    /// <summary>Logits [B, T, V] = <see cref="LogitsFromHidden"/>(<see cref="ForwardHidden"/>(input)).</summary>
    public CausalLMOutput Forward(CausalLMInput input)
    {
        var h = ForwardHidden(input);
        return new CausalLMOutput { Logits = LogitsFromHidden(h.LastHiddenState), HiddenStates = h.HiddenStates };
    }

    /// <summary>
    /// Activation checkpointing (opt-in, for training): each decoder layer keeps only its input for the backward and
    /// recomputes its activations there (<see cref="LayerCheckpoint"/>). Only takes effect while gradients are being
    /// recorded; gradients are those of the plain forward.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>
    /// Runs decoder layer <paramref name="index"/> on <paramref name="h"/>: <paramref name="forward"/>(input, cache)
    /// is the layer's forward. See <see cref="LayerCheckpoint.Run"/>.
    /// </summary>
    protected Tensor RunLayer(nn.Module layer, int index, Tensor h, KVCache? cache, Func<Tensor, KVCache?, Tensor> forward) =>
        LayerCheckpoint.Run(this, layer, index, h, cache, forward);

    /// <summary>Number of key/value heads per layer in the cache (n_head for GPT-2).</summary>
    public int CacheHeads => Config.IsGpt2 ? Config.NumHeads : Config.NumKeyValueHeads;

    /// <summary>Per layer the attention window its cache keeps (null = everything).</summary>
    public IReadOnlyList<int?> CacheWindows => Enumerable.Range(0, Config.NumLayers).Select(Config.WindowOf).ToList();

    /// <summary>An empty KV cache; sliding-window layers keep only the keys their window can still reach.</summary>
    public KVCache NewCache() => new(Config.NumLayers, CacheWindows);

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

    /// <summary>The first layer's input, the past length, the 2-D mask, positions and the masks of every layer.</summary>
    protected (Tensor h, long past, Tensor positions, AttentionMasks masks) Prepare(CausalLMInput input)
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
        if (input.SequenceIds is Tensor seq && (seq.dim() != 2 || seq.shape[0] != b || seq.shape[1] != t || seq.dtype != ScalarType.Int64))
            throw new ArgumentException($"SequenceIds must be int64 [{b}, {t}], got {seq.dtype} [{string.Join(",", seq.shape)}]");
        var pos = input.PositionIds ?? (torch.arange(past, past + t, dtype: ScalarType.Int64, device: h.device).unsqueeze(0).expand(b, -1));
        var masks = new AttentionMasks(mask, past, t, h.dtype, input.SequenceIds, input.PastIsSharedPrefix);
        return (h, past, pos, masks);
    }
}
