namespace ML.Finetune.Models;

/// <summary>Which layers of a family get a sliding attention window, and how its config says so.</summary>
public enum SlidingWindowRule
{
    /// <summary>The family has no sliding window (Llama, GPT-2).</summary>
    None,
    /// <summary><c>sliding_window</c>, when not null, applies to every layer (Mistral, Phi-3).</summary>
    AllLayers,
    /// <summary><c>use_sliding_window</c> switches it on for layers ≥ <c>max_window_layers</c>, or <c>layer_types</c> says which (Qwen2, Qwen3).</summary>
    QwenLayers,
    /// <summary><c>layer_types</c> (or the family's default pattern) marks the sliding layers (Gemma 2, Gemma 3).</summary>
    LayerTypes,
}

/// <summary>
/// The structural differences between the decoder families we load, in one table (LitGPT's config-driven block):
/// the decoder block in <see cref="DecoderLM"/> reads these flags and nothing family-specific. Numeric settings
/// (softcaps, windows, rope) live in <see cref="CausalLMConfig"/>; these flags follow from the model_type alone.
/// </summary>
public sealed record ModelFamily
{
    public required string ModelType { get; init; }
    /// <summary>The transformers class written to config.json's <c>architectures</c>.</summary>
    public required string Architecture { get; init; }
    /// <summary>One <c>qkv_proj</c> [q | k | v] instead of q_proj/k_proj/v_proj (Phi-3).</summary>
    public bool FusedQkv { get; init; }
    /// <summary>One <c>gate_up_proj</c> [gate | up] instead of gate_proj/up_proj (Phi-3).</summary>
    public bool FusedGateUp { get; init; }
    /// <summary>Per-head RMSNorm <c>q_norm</c>/<c>k_norm</c> over head_dim before RoPE (Qwen3, Gemma 3).</summary>
    public bool QkNorm { get; init; }
    /// <summary>Gemma: RMSNorm computes x̂·(1 + w) (weights start at 0), sandwich norms around attention and MLP
    /// (<c>pre_/post_feedforward_layernorm</c>), token embeddings × √hidden, <c>query_pre_attn_scalar</c>.</summary>
    public bool Gemma { get; init; }
    /// <summary>Qwen2: q/k/v always have biases, o_proj never. Otherwise <c>attention_bias</c> covers q, k, v and o.</summary>
    public bool QkvBiasOnly { get; init; }
    /// <summary>Llama's <c>mlp_bias</c> is honoured (other families have no MLP biases).</summary>
    public bool MlpBiasField { get; init; }
    /// <summary>Whether <c>attention_bias</c> is read at all (Mistral and Phi-3 have no attention biases).</summary>
    public bool AttentionBiasField { get; init; }
    /// <summary>Phi-3: dropout <c>resid_pdrop</c> on the attention and MLP outputs before the residual add.</summary>
    public bool ResidualDropout { get; init; }
    /// <summary>Gemma 2 caps attention scores with <c>attn_logit_softcapping</c> (Gemma 3 ignores that field, as HF does).</summary>
    public bool AttentionSoftcap { get; init; }
    /// <summary>Gemma 2/3 cap the logits with <c>final_logit_softcapping</c>.</summary>
    public bool FinalSoftcap { get; init; }
    /// <summary>Phi-3 rotates only the first partial_rotary_factor of each head (HF's other families do not slice).</summary>
    public bool PartialRotary { get; init; }
    /// <summary>The config field naming the MLP activation.</summary>
    public string ActivationField { get; init; } = "hidden_act";
    public string DefaultActivation { get; init; } = "silu";
    public bool TiedByDefault { get; init; }
    public SlidingWindowRule SlidingWindow { get; init; }
    /// <summary>HF's default <c>sliding_window</c> when the key is absent (Mistral, Gemma: 4096).</summary>
    public int? DefaultSlidingWindow { get; init; }
    /// <summary>HF's default rope theta when the config names none.</summary>
    public double DefaultRopeTheta { get; init; } = 10000;
    /// <summary>HF's config defaults when a key is absent (an explicit null switches a softcap off).</summary>
    public int? DefaultHeadDim { get; init; }
    public double? DefaultAttentionSoftcap { get; init; }
    public double? DefaultFinalSoftcap { get; init; }

    public static readonly IReadOnlyList<ModelFamily> All =
    [
        new() { ModelType = "gpt2", Architecture = "GPT2LMHeadModel", TiedByDefault = true, DefaultActivation = "gelu_new", ActivationField = "activation_function" },
        new() { ModelType = "llama", Architecture = "LlamaForCausalLM", MlpBiasField = true, AttentionBiasField = true },
        new() { ModelType = "qwen2", Architecture = "Qwen2ForCausalLM", QkvBiasOnly = true, SlidingWindow = SlidingWindowRule.QwenLayers },
        new() { ModelType = "mistral", Architecture = "MistralForCausalLM", SlidingWindow = SlidingWindowRule.AllLayers, DefaultSlidingWindow = 4096 },
        new()
        {
            ModelType = "qwen3", Architecture = "Qwen3ForCausalLM", QkNorm = true, AttentionBiasField = true,
            SlidingWindow = SlidingWindowRule.QwenLayers, DefaultHeadDim = 128,
        },
        new()
        {
            ModelType = "phi3", Architecture = "Phi3ForCausalLM", FusedQkv = true, FusedGateUp = true, ResidualDropout = true,
            PartialRotary = true, SlidingWindow = SlidingWindowRule.AllLayers,
        },
        new()
        {
            ModelType = "gemma2", Architecture = "Gemma2ForCausalLM", Gemma = true, AttentionBiasField = true, AttentionSoftcap = true,
            FinalSoftcap = true, ActivationField = "hidden_activation", DefaultActivation = "gelu_pytorch_tanh", TiedByDefault = true,
            SlidingWindow = SlidingWindowRule.LayerTypes, DefaultSlidingWindow = 4096, DefaultHeadDim = 256,
            DefaultAttentionSoftcap = 50.0, DefaultFinalSoftcap = 30.0,
        },
        new()
        {
            ModelType = "gemma3_text", Architecture = "Gemma3ForCausalLM", Gemma = true, QkNorm = true, AttentionBiasField = true,
            FinalSoftcap = true, ActivationField = "hidden_activation", DefaultActivation = "gelu_pytorch_tanh", TiedByDefault = true,
            SlidingWindow = SlidingWindowRule.LayerTypes, DefaultSlidingWindow = 4096, DefaultRopeTheta = 1_000_000, DefaultHeadDim = 256,
        },
    ];

    public static IReadOnlyList<string> SupportedModelTypes { get; } = All.Select(f => f.ModelType).ToList();

    /// <summary>The family of a model_type, or null when we do not support it.</summary>
    public static ModelFamily? Find(string modelType) => All.FirstOrDefault(f => f.ModelType == modelType);

    public static ModelFamily Of(string modelType) => Find(modelType)
        ?? throw new ArgumentException($"model_type '{modelType}' is not supported (supported: {string.Join(", ", SupportedModelTypes)})");
}
