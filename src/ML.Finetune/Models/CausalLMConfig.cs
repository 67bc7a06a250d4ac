using ML.Finetune.Checkpoints;

namespace ML.Finetune.Models;

/// <summary>
/// The architecture-relevant subset of a Hugging Face config.json for the causal LMs we support (the families in
/// <see cref="ModelFamily"/>). Parsing lives in CausalLMConfig.Parse.cs, writing in CausalLMConfig.Json.cs.
/// A config built in code defaults to a Llama with default RoPE and no sliding window.
/// </summary>
public sealed partial record CausalLMConfig
{
    public static IReadOnlyList<string> SupportedModelTypes => ModelFamily.SupportedModelTypes;

    public const string FullAttention = "full_attention";
    public const string SlidingAttention = "sliding_attention";

    public string ModelType { get; init; } = "llama";
    public int VocabSize { get; init; }
    public int HiddenSize { get; init; }
    public int NumLayers { get; init; }
    public int NumHeads { get; init; }
    public int NumKeyValueHeads { get; init; }
    public int HeadDim { get; init; }
    public int IntermediateSize { get; init; }
    public int MaxPositionEmbeddings { get; init; } = 2048;
    public double NormEps { get; init; } = 1e-5;
    /// <summary>RoPE of every layer, or of the full-attention layers when <see cref="SlidingRope"/> is set.</summary>
    public RopeParameters Rope { get; init; } = new();
    /// <summary>Gemma 3: the sliding layers' own RoPE (rope_parameters.sliding_attention / rope_local_base_freq).</summary>
    public RopeParameters? SlidingRope { get; init; }
    /// <summary>The base theta of <see cref="Rope"/>.</summary>
    public double RopeTheta => Rope.Theta;
    public bool TieWordEmbeddings { get; init; }
    /// <summary>q, k and v projections have biases (Qwen2 always; Llama/Qwen3/Gemma via attention_bias, which also covers o_proj).</summary>
    public bool AttentionBias { get; init; }
    public bool MlpBias { get; init; }
    public string HiddenAct { get; init; } = "silu";
    public double AttentionDropout { get; init; }
    public double ResidualDropout { get; init; }
    public double EmbeddingDropout { get; init; }
    /// <summary>Keys within this many positions (the query included) are visible on sliding layers; null = no window.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>Per layer <see cref="FullAttention"/> or <see cref="SlidingAttention"/>; null with a window = every layer slides.</summary>
    public IReadOnlyList<string>? LayerTypes { get; init; }
    /// <summary>Gemma: attention scores are scaled by query_pre_attn_scalar^-0.5 instead of head_dim^-0.5.</summary>
    public double? QueryPreAttnScalar { get; init; }
    /// <summary>Gemma 2: scores become c·tanh(s/c) before the mask.</summary>
    public double? AttnLogitSoftcapping { get; init; }
    /// <summary>Gemma 2/3: logits become c·tanh(z/c).</summary>
    public double? FinalLogitSoftcapping { get; init; }
    public long? BosTokenId { get; init; }
    public IReadOnlyList<long> EosTokenIds { get; init; } = [];
    public long? PadTokenId { get; init; }

    public bool IsGpt2 => ModelType == "gpt2";

    /// <summary>The structural traits of this model_type (throws for an unsupported one).</summary>
    public ModelFamily GetFamily() => ModelFamily.Of(ModelType);

    /// <summary>The attention window of a layer, or null for full attention.</summary>
    public int? WindowOf(int layer) =>
        SlidingWindow is int w && (LayerTypes is null || LayerTypes[layer] == SlidingAttention) ? w : null;

    /// <summary>The RoPE parameters a layer uses.</summary>
    public RopeParameters RopeOf(int layer) => SlidingRope is not null && WindowOf(layer) is not null ? SlidingRope : Rope;

    /// <summary>
    /// True when keys rotated for a batch reaching <paramref name="cachedSeqLen"/> = max(position)+1 are stale for one
    /// reaching <paramref name="seqLen"/>: LongRoPE swaps its short factors for the long ones past
    /// original_max_position_embeddings (transformers' Phi-3 drops its cache at that point and recomputes).
    /// Dynamic NTK keeps cached keys as they were (HF does too).
    /// </summary>
    public bool RopeSwitchesBetween(long cachedSeqLen, long seqLen) =>
        new[] { Rope, SlidingRope }.Any(r => r is { Type: "longrope", OriginalMaxPositionEmbeddings: int o } && cachedSeqLen > o != seqLen > o);

    /// <summary>The factor attention scores are multiplied by, written as HF writes it (x**-0.5).</summary>
    public double AttentionScale => Math.Pow(QueryPreAttnScalar ?? HeadDim, -0.5);

    public bool Equals(CausalLMConfig? other) =>
        other is not null && Canonical().ToString() == other.Canonical().ToString()
        && EosTokenIds.SequenceEqual(other.EosTokenIds) && Rope.Equals(other.Rope) && Equals(SlidingRope, other.SlidingRope)
        && (LayerTypes ?? []).SequenceEqual(other.LayerTypes ?? []) && (LayerTypes is null) == (other.LayerTypes is null);

    /// <summary>The scalar fields only (record printing shows lists as type names).</summary>
    CausalLMConfig Canonical() => this with { EosTokenIds = [], LayerTypes = null, Rope = new(), SlidingRope = null };

    public override int GetHashCode() => HashCode.Combine(ModelType, VocabSize, HiddenSize, NumLayers);

    /// <summary>Reads config.json (and generation_config.json when present) from a model folder.</summary>
    public static CausalLMConfig Load(string folder)
    {
        string path = Path.Combine(folder, "config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"model config not found: {path}", path);
        var cfg = Parse(File.ReadAllText(path), path);
        string gen = Path.Combine(folder, "generation_config.json");
        return File.Exists(gen) ? cfg.WithGenerationConfig(File.ReadAllText(gen), gen) : cfg;
    }

    public void Validate(string path = "config")
    {
        CheckpointFormatException Bad(string field, string what) => new($"{path}: field '{field}' {what}") { FilePath = path };
        void Pos(int v, string f) { if (v <= 0) throw Bad(f, $"must be positive, got {v}"); }
        if (ModelFamily.Find(ModelType) is null)
            throw new UnsupportedModelException($"{path}: model_type '{ModelType}' is not supported (supported: {string.Join(", ", SupportedModelTypes)})");
        Pos(VocabSize, "vocab_size"); Pos(HiddenSize, "hidden_size"); Pos(NumLayers, "num_hidden_layers");
        Pos(NumHeads, "num_attention_heads"); Pos(NumKeyValueHeads, "num_key_value_heads"); Pos(HeadDim, "head_dim");
        Pos(IntermediateSize, "intermediate_size"); Pos(MaxPositionEmbeddings, "max_position_embeddings");
        if (IsGpt2 && HeadDim * NumHeads != HiddenSize) throw Bad("n_head", "does not divide n_embd");
        if (NumHeads % NumKeyValueHeads != 0) throw Bad("num_key_value_heads", $"{NumKeyValueHeads} must divide num_attention_heads {NumHeads}");
        if (!(NormEps > 0)) throw Bad("rms_norm_eps", "must be positive");
        foreach (var (p, f) in new[] { (AttentionDropout, "attention_dropout"), (ResidualDropout, "resid_pdrop"), (EmbeddingDropout, "embd_pdrop") })
            if (!(p >= 0 && p < 1)) throw Bad(f, $"must be in [0,1), got {p}");
        if (SlidingWindow is int w && w <= 0) throw Bad("sliding_window", $"must be positive, got {w}");
        if (LayerTypes is not null)
        {
            if (LayerTypes.Count != NumLayers) throw Bad("layer_types", $"has {LayerTypes.Count} entries for {NumLayers} layers");
            foreach (var t in LayerTypes)
                if (t is not (FullAttention or SlidingAttention))
                    throw new UnsupportedModelException($"{path}: field 'layer_types': layer type '{t}' is not supported (supported: {FullAttention}, {SlidingAttention})");
            if (SlidingWindow is null && LayerTypes.Contains(SlidingAttention))
                throw Bad("sliding_window", "is null but layer_types has sliding_attention layers");
        }
        foreach (var (v, f) in new[] { (QueryPreAttnScalar, "query_pre_attn_scalar"), (AttnLogitSoftcapping, "attn_logit_softcapping"), (FinalLogitSoftcapping, "final_logit_softcapping") })
            if (v is double d && !(d > 0 && double.IsFinite(d))) throw Bad(f, $"must be positive, got {d}");
        if (IsGpt2) return;
        foreach (var (rope, field) in new[] { (Rope, "rope_parameters"), (SlidingRope, "rope_parameters.sliding_attention") })
        {
            if (rope is null) continue;
            if (!(rope.Theta > 0 && double.IsFinite(rope.Theta))) throw Bad($"{field}.rope_theta", "must be positive");
            int dim = rope.RotaryDim(HeadDim);
            if (dim <= 0 || dim % 2 != 0) throw Bad($"{field}.partial_rotary_factor", $"gives {dim} rotary dims of head_dim {HeadDim}; RoPE needs a positive even number");
            if (rope.Type == "dynamic" && dim <= 2) throw Bad($"{field}.rope_type", "dynamic needs more than 2 rotary dims");
            foreach (var (list, name) in new[] { (rope.ShortFactor, "short_factor"), (rope.LongFactor, "long_factor") })
                if (list is not null && list.Count != dim / 2) throw Bad($"{field}.{name}", $"has {list.Count} entries; rotary dim {dim} needs {dim / 2}");
        }
    }
}
