using System.Text.Json;
using System.Text.Json.Nodes;
using ML.Finetune.Checkpoints;

namespace ML.Finetune.Models;

/// <summary>Reading config.json the way transformers 5.x does, including 4.x-style configs (most Hub checkpoints).</summary>
public sealed partial record CausalLMConfig
{
    static readonly string[] DecoderActivations = ["silu", "gelu", "gelu_new", "gelu_pytorch_tanh"];

    /// <summary>Parses config.json text; <paramref name="path"/> is only used in error messages.</summary>
    public static CausalLMConfig Parse(string json, string path = "config.json") =>
        WrapJsonErrors(path, () => ParseCore(json, path));

    /// <summary>System.Text.Json.Nodes reports some problems (duplicate keys) lazily with non-JSON exception types.</summary>
    static T WrapJsonErrors<T>(string path, Func<T> f)
    {
        try { return f(); }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException or FormatException)
        { throw new CheckpointFormatException($"{path}: field '(root)': invalid JSON content: {e.Message}", e) { FilePath = path }; }
    }

    static CausalLMConfig ParseCore(string json, string path)
    {
        var r = new ConfigReader(ParseObject(json, path), path);
        string type = r.Str("model_type") ?? throw r.Bad("model_type", "missing");
        var family = ModelFamily.Find(type)
            ?? throw new UnsupportedModelException($"{path}: model_type '{type}' is not supported (supported: {string.Join(", ", SupportedModelTypes)})");
        var c = type == "gpt2" ? ParseGpt2(r) : ParseDecoder(r, family);
        c.Validate(path);
        return c;
    }

    static CausalLMConfig ParseGpt2(ConfigReader r)
    {
        int hidden = r.ReqInt("n_embd"), heads = r.ReqInt("n_head");
        if (heads <= 0 || hidden % heads != 0) throw r.Bad("n_head", $"{heads} does not divide hidden size {hidden}");
        string act = r.Str("activation_function") ?? "gelu_new";
        if (act is not ("gelu_new" or "gelu_pytorch_tanh"))
            throw new UnsupportedModelException($"{r.Path}: activation '{act}' is not supported for gpt2 (supported: gelu_new, gelu_pytorch_tanh)");
        return new CausalLMConfig
        {
            ModelType = "gpt2", VocabSize = r.ReqInt("vocab_size"), HiddenSize = hidden, NumLayers = r.ReqInt("n_layer"),
            NumHeads = heads, NumKeyValueHeads = heads, HeadDim = hidden / heads, IntermediateSize = r.Int("n_inner") ?? 4 * hidden,
            MaxPositionEmbeddings = r.Int("n_positions") ?? 1024, NormEps = r.Dbl("layer_norm_epsilon") ?? 1e-5,
            TieWordEmbeddings = r.Bool("tie_word_embeddings") ?? true, HiddenAct = act,
            AttentionDropout = r.Dbl("attn_pdrop") ?? 0, ResidualDropout = r.Dbl("resid_pdrop") ?? 0, EmbeddingDropout = r.Dbl("embd_pdrop") ?? 0,
            BosTokenId = r.Long("bos_token_id"), EosTokenIds = r.LongList("eos_token_id"), PadTokenId = r.Long("pad_token_id"),
        };
    }

    static CausalLMConfig ParseDecoder(ConfigReader r, ModelFamily f)
    {
        int hidden = r.ReqInt("hidden_size"), heads = r.ReqInt("num_attention_heads"), layers = r.ReqInt("num_hidden_layers");
        int kv = r.Int("num_key_value_heads") ?? heads;
        int? explicitHeadDim = r.Int("head_dim") ?? f.DefaultHeadDim;
        if (heads <= 0 || hidden % heads != 0 && (explicitHeadDim is null || f.Gemma))
            throw r.Bad("num_attention_heads", $"{heads} does not divide hidden size {hidden}");
        int headDim = explicitHeadDim ?? hidden / heads;
        if (kv <= 0 || heads % kv != 0) throw r.Bad("num_key_value_heads", $"{kv} must be positive and divide num_attention_heads {heads}");
        string act = r.Str(f.ActivationField) ?? f.DefaultActivation;
        if (!DecoderActivations.Contains(act))
            throw new UnsupportedModelException($"{r.Path}: field '{f.ActivationField}': activation '{act}' is not supported for {f.ModelType} (supported: {string.Join(", ", DecoderActivations)})");
        if (r.Bool("use_bidirectional_attention") == true)
            throw r.Unsupported("use_bidirectional_attention", "bidirectional attention (an encoder setting) is not supported by a causal LM");
        int maxPos = r.Int("max_position_embeddings") ?? 2048;
        var (window, layerTypes) = ReadWindow(r, f, layers);
        var (rope, slidingRope) = ReadRope(r, f, maxPos);
        return new CausalLMConfig
        {
            ModelType = f.ModelType,
            VocabSize = r.ReqInt("vocab_size"),
            HiddenSize = hidden,
            NumLayers = layers,
            NumHeads = heads,
            NumKeyValueHeads = kv,
            HeadDim = headDim,
            IntermediateSize = r.ReqInt("intermediate_size"),
            MaxPositionEmbeddings = maxPos,
            NormEps = r.Dbl("rms_norm_eps") ?? 1e-6,
            Rope = rope,
            SlidingRope = slidingRope,
            TieWordEmbeddings = r.Bool("tie_word_embeddings") ?? f.TiedByDefault,
            AttentionBias = f.QkvBiasOnly || f.AttentionBiasField && (r.Bool("attention_bias") ?? false),
            MlpBias = f.MlpBiasField && (r.Bool("mlp_bias") ?? false),
            HiddenAct = act,
            AttentionDropout = r.Dbl("attention_dropout") ?? 0,
            ResidualDropout = f.ResidualDropout ? r.Dbl("resid_pdrop") ?? 0 : 0,
            SlidingWindow = window,
            LayerTypes = layerTypes,
            QueryPreAttnScalar = f.Gemma ? (r.Has("query_pre_attn_scalar") ? r.Dbl("query_pre_attn_scalar") ?? throw r.Bad("query_pre_attn_scalar", "must be a number") : 256) : null,
            AttnLogitSoftcapping = f.AttentionSoftcap ? (r.Has("attn_logit_softcapping") ? r.Dbl("attn_logit_softcapping") : f.DefaultAttentionSoftcap) : null,
            FinalLogitSoftcapping = f.FinalSoftcap ? (r.Has("final_logit_softcapping") ? r.Dbl("final_logit_softcapping") : f.DefaultFinalSoftcap) : null,
            BosTokenId = r.Long("bos_token_id"),
            EosTokenIds = r.LongList("eos_token_id"),
            PadTokenId = r.Long("pad_token_id"),
        };
    }

    /// <summary>The sliding window and which layers use it, by the family's rule (see <see cref="SlidingWindowRule"/>).</summary>
    static (int? Window, IReadOnlyList<string>? LayerTypes) ReadWindow(ConfigReader r, ModelFamily f, int layers)
    {
        int? Window() => r.Has("sliding_window") ? r.Int("sliding_window") : f.DefaultSlidingWindow;
        IReadOnlyList<string> Pattern(Func<int, bool> sliding) =>
            Enumerable.Range(0, Math.Max(layers, 0)).Select(i => sliding(i) ? SlidingAttention : FullAttention).ToList();
        switch (f.SlidingWindow)
        {
            case SlidingWindowRule.AllLayers:
                int? all = Window();
                return (all, all is null ? null : Pattern(_ => true));
            case SlidingWindowRule.QwenLayers:
            {
                // Qwen2Config: sliding_window = sliding_window if use_sliding_window else None; layer_types (written by
                // 5.x) is authoritative, else layers from max_window_layers on slide.
                int? w = r.Bool("use_sliding_window") == true ? r.Has("sliding_window") ? r.Int("sliding_window") : 4096 : null;
                int maxWindowLayers = r.Int("max_window_layers") ?? 28;
                return (w, r.StrList("layer_types") ?? Pattern(i => w is not null && i >= maxWindowLayers));
            }
            case SlidingWindowRule.LayerTypes:
            {
                int pattern = f.ModelType == "gemma2" ? 2 : r.Int("sliding_window_pattern") ?? 6;
                if (pattern <= 0) throw r.Bad("sliding_window_pattern", $"must be positive, got {pattern}");
                return (Window(), r.StrList("layer_types") ?? Pattern(i => (i + 1) % pattern != 0));
            }
            default:
                return (null, null);
        }
    }

    /// <summary>
    /// RoPE from <c>rope_parameters</c> (5.x) or <c>rope_scaling</c> + <c>rope_theta</c> (4.x; rope_scaling wins, as in
    /// transformers). Gemma 3 nests rope_parameters by layer type; its 4.x form puts rope_scaling on the full layers and
    /// <c>rope_local_base_freq</c> on the sliding ones. Phi-3 takes a top-level partial_rotary_factor and
    /// original_max_position_embeddings, and reads rope types "su"/"yarn" as "longrope" (as Phi3Config does).
    /// </summary>
    static (RopeParameters Rope, RopeParameters? SlidingRope) ReadRope(ConfigReader r, ModelFamily f, int maxPos)
    {
        double? topTheta = r.Dbl("rope_theta");
        double? topPartial = f.PartialRotary ? r.Dbl("partial_rotary_factor") : null;
        int? topOriginal = f.PartialRotary ? r.Int("original_max_position_embeddings") : null;
        var aliases = f.ModelType == "phi3" ? new Dictionary<string, string> { ["su"] = "longrope", ["yarn"] = "longrope" } : null;
        var scaling = r.Object("rope_scaling");
        var parameters = r.Object("rope_parameters");
        if (f.ModelType == "gemma3_text")
        {
            if (parameters is not null && parameters.Keys.Any(k => k is not (FullAttention or SlidingAttention)))
                throw r.Bad("rope_parameters", $"Gemma 3 expects rope parameters per layer type ({FullAttention}, {SlidingAttention})");
            var full = MergedRope(parameters?.Object(FullAttention), scaling, r.Path);
            var global = RopeParameters.Read(full, topTheta ?? f.DefaultRopeTheta, null, maxPos);
            var local = RopeParameters.Read(parameters?.Object(SlidingAttention), r.Dbl("rope_local_base_freq") ?? 10000, null, maxPos);
            return (global, local);
        }
        var rope = RopeParameters.Read(scaling ?? parameters, topTheta ?? f.DefaultRopeTheta, topPartial, maxPos, topOriginal,
            originalMaxOverrides: topOriginal is not null, aliases);
        var field = scaling is not null ? "rope_scaling" : "rope_parameters";
        if (f.ModelType == "phi3" && rope.Type is not ("default" or "longrope"))
            throw new UnsupportedModelException($"{r.Path}: field '{field}.rope_type': phi3 accepts rope types default and longrope, got '{rope.Type}'");
        if (!f.PartialRotary && rope.PartialRotaryFactor != 1.0)
            throw new UnsupportedModelException($"{r.Path}: field '{field}.partial_rotary_factor': partial rotary embeddings are applied by phi3 only; {f.ModelType} rotates whole heads");
        return (rope, null);
    }

    /// <summary>Gemma 3's full-attention dict updated with a 4.x rope_scaling (transformers: dict.update).</summary>
    static ConfigReader? MergedRope(ConfigReader? full, ConfigReader? scaling, string path)
    {
        if (scaling is null) return full;
        if (full is null) return scaling;
        var merged = new JsonObject();
        foreach (var source in new[] { full, scaling })
            foreach (var key in source.Keys) merged[key] = source.Raw(key)?.DeepClone();
        return new ConfigReader(merged, path, "rope_scaling.");
    }

    /// <summary>Overrides bos/eos/pad with generation_config.json values where that file sets them.</summary>
    public CausalLMConfig WithGenerationConfig(string json, string path) => WrapJsonErrors(path, () => WithGenerationConfigCore(json, path));

    CausalLMConfig WithGenerationConfigCore(string json, string path)
    {
        var r = new ConfigReader(ParseObject(json, path), path);
        var eos = r.LongList("eos_token_id");
        return this with
        {
            BosTokenId = r.Long("bos_token_id") ?? BosTokenId,
            EosTokenIds = eos.Count > 0 ? eos : EosTokenIds,
            PadTokenId = r.Long("pad_token_id") ?? PadTokenId,
        };
    }

    static JsonObject ParseObject(string json, string path)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = 64 }); }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException)
        { throw new CheckpointFormatException($"{path}: field '(root)': not valid JSON: {e.Message}", e) { FilePath = path }; }
        return node as JsonObject ?? throw new CheckpointFormatException($"{path}: field '(root)': must be a JSON object") { FilePath = path };
    }
}
