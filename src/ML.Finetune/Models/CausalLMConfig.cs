using System.Text.Json;
using System.Text.Json.Nodes;
using ML.Finetune.Checkpoints;

namespace ML.Finetune.Models;

/// <summary>
/// The architecture-relevant subset of a Hugging Face config.json for the causal LMs we support.
/// GPT-2 and Llama-family field names are both understood; <see cref="ToJson"/> writes the native names back.
/// </summary>
public sealed record CausalLMConfig
{
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["gpt2", "llama", "qwen2", "mistral"];

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
    public double RopeTheta { get; init; } = 10000;
    public bool TieWordEmbeddings { get; init; }
    public bool AttentionBias { get; init; }
    public bool MlpBias { get; init; }
    public string HiddenAct { get; init; } = "silu";
    public double AttentionDropout { get; init; }
    public double ResidualDropout { get; init; }
    public double EmbeddingDropout { get; init; }
    public long? BosTokenId { get; init; }
    public IReadOnlyList<long> EosTokenIds { get; init; } = [];
    public long? PadTokenId { get; init; }

    public bool IsGpt2 => ModelType == "gpt2";

    public bool Equals(CausalLMConfig? other) =>
        other is not null && (this with { EosTokenIds = [] }).ToString() == (other with { EosTokenIds = [] }).ToString()
        && EosTokenIds.SequenceEqual(other.EosTokenIds);

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
        JsonObject o = ParseObject(json, path);
        var r = new Reader(o, path);
        string type = r.Str("model_type") ?? throw r.Bad("model_type", "missing");
        if (!SupportedModelTypes.Contains(type))
            throw new UnsupportedModelException($"{path}: model_type '{type}' is not supported (supported: {string.Join(", ", SupportedModelTypes)})");
        bool gpt2 = type == "gpt2";
        int hidden = r.ReqInt(gpt2 ? "n_embd" : "hidden_size");
        int heads = r.ReqInt(gpt2 ? "n_head" : "num_attention_heads");
        int kv = gpt2 ? heads : r.Int("num_key_value_heads") ?? heads;
        if (heads <= 0 || hidden % heads != 0 && r.Int("head_dim") == null) throw r.Bad(gpt2 ? "n_head" : "num_attention_heads", $"{heads} does not divide hidden size {hidden}");
        int headDim = r.Int("head_dim") ?? hidden / heads;
        if (kv <= 0 || heads % kv != 0) throw r.Bad("num_key_value_heads", $"{kv} must be positive and divide num_attention_heads {heads}");
        string act = r.Str(gpt2 ? "activation_function" : "hidden_act") ?? (gpt2 ? "gelu_new" : "silu");
        string[] acts = gpt2 ? ["gelu_new", "gelu_pytorch_tanh"] : ["silu"];
        if (!acts.Contains(act)) throw new UnsupportedModelException($"{path}: activation '{act}' is not supported for {type} (supported: {string.Join(", ", acts)})");
        var c = new CausalLMConfig
        {
            ModelType = type,
            VocabSize = r.ReqInt("vocab_size"),
            HiddenSize = hidden,
            NumLayers = r.ReqInt(gpt2 ? "n_layer" : "num_hidden_layers"),
            NumHeads = heads,
            NumKeyValueHeads = kv,
            HeadDim = headDim,
            IntermediateSize = gpt2 ? r.Int("n_inner") ?? 4 * hidden : r.ReqInt("intermediate_size"),
            MaxPositionEmbeddings = r.Int(gpt2 ? "n_positions" : "max_position_embeddings") ?? (gpt2 ? 1024 : 2048),
            NormEps = r.Dbl(gpt2 ? "layer_norm_epsilon" : "rms_norm_eps") ?? (gpt2 ? 1e-5 : 1e-6),
            RopeTheta = r.Dbl("rope_theta") ?? r.Dbl("rope_parameters", "rope_theta") ?? 10000,
            TieWordEmbeddings = r.Bool("tie_word_embeddings") ?? gpt2,
            AttentionBias = type == "qwen2" || (r.Bool("attention_bias") ?? false),
            MlpBias = !gpt2 && (r.Bool("mlp_bias") ?? false),
            HiddenAct = act,
            AttentionDropout = r.Dbl(gpt2 ? "attn_pdrop" : "attention_dropout") ?? 0,
            ResidualDropout = gpt2 ? r.Dbl("resid_pdrop") ?? 0 : 0,
            EmbeddingDropout = gpt2 ? r.Dbl("embd_pdrop") ?? 0 : 0,
            BosTokenId = r.Long("bos_token_id"),
            EosTokenIds = r.LongList("eos_token_id"),
            PadTokenId = r.Long("pad_token_id"),
        };
        if (!gpt2 && r.Str("rope_scaling", "rope_type") is string rs && rs != "default" ||
            r.Str("rope_parameters", "rope_type") is string rt && rt != "default")
            throw new UnsupportedModelException($"{path}: rope scaling / rope_type other than 'default' is not supported");
        c.Validate(path);
        return c;
    }

    /// <summary>Overrides bos/eos/pad with generation_config.json values where that file sets them.</summary>
    public CausalLMConfig WithGenerationConfig(string json, string path) => WrapJsonErrors(path, () => WithGenerationConfigCore(json, path));

    CausalLMConfig WithGenerationConfigCore(string json, string path)
    {
        var r = new Reader(ParseObject(json, path), path);
        var eos = r.LongList("eos_token_id");
        return this with
        {
            BosTokenId = r.Long("bos_token_id") ?? BosTokenId,
            EosTokenIds = eos.Count > 0 ? eos : EosTokenIds,
            PadTokenId = r.Long("pad_token_id") ?? PadTokenId,
        };
    }

    public void Validate(string path = "config")
    {
        void Pos(int v, string f) { if (v <= 0) throw new CheckpointFormatException($"{path}: field '{f}' must be positive, got {v}") { FilePath = path }; }
        Pos(VocabSize, "vocab_size"); Pos(HiddenSize, "hidden_size"); Pos(NumLayers, "num_hidden_layers");
        Pos(NumHeads, "num_attention_heads"); Pos(NumKeyValueHeads, "num_key_value_heads"); Pos(HeadDim, "head_dim");
        Pos(IntermediateSize, "intermediate_size"); Pos(MaxPositionEmbeddings, "max_position_embeddings");
        if (IsGpt2 && HeadDim * NumHeads != HiddenSize) throw new CheckpointFormatException($"{path}: field 'n_head' does not divide n_embd") { FilePath = path };
        if (HeadDim % 2 != 0 && !IsGpt2) throw new CheckpointFormatException($"{path}: field 'head_dim' must be even for RoPE, got {HeadDim}") { FilePath = path };
        if (!(NormEps > 0) || !double.IsFinite(RopeTheta) || RopeTheta <= 0)
            throw new CheckpointFormatException($"{path}: field 'rms_norm_eps'/'rope_theta' must be positive") { FilePath = path };
        foreach (var (p, f) in new[] { (AttentionDropout, "attention_dropout"), (ResidualDropout, "resid_pdrop"), (EmbeddingDropout, "embd_pdrop") })
            if (!(p >= 0 && p < 1)) throw new CheckpointFormatException($"{path}: field '{f}' must be in [0,1), got {p}") { FilePath = path };
    }

    /// <summary>Writes a config.json that transformers can load (native field names for the model type).</summary>
    public string ToJson()
    {
        var o = new JsonObject { ["model_type"] = ModelType, ["vocab_size"] = VocabSize, ["tie_word_embeddings"] = TieWordEmbeddings };
        if (IsGpt2)
        {
            o["architectures"] = new JsonArray("GPT2LMHeadModel");
            o["n_embd"] = HiddenSize; o["n_layer"] = NumLayers; o["n_head"] = NumHeads; o["n_inner"] = IntermediateSize;
            o["n_positions"] = MaxPositionEmbeddings; o["layer_norm_epsilon"] = NormEps; o["activation_function"] = HiddenAct;
            o["attn_pdrop"] = AttentionDropout; o["resid_pdrop"] = ResidualDropout; o["embd_pdrop"] = EmbeddingDropout;
        }
        else
        {
            o["architectures"] = new JsonArray(ModelType switch { "qwen2" => "Qwen2ForCausalLM", "mistral" => "MistralForCausalLM", _ => "LlamaForCausalLM" });
            o["hidden_size"] = HiddenSize; o["num_hidden_layers"] = NumLayers; o["num_attention_heads"] = NumHeads;
            o["num_key_value_heads"] = NumKeyValueHeads; o["head_dim"] = HeadDim; o["intermediate_size"] = IntermediateSize;
            o["max_position_embeddings"] = MaxPositionEmbeddings; o["rms_norm_eps"] = NormEps; o["hidden_act"] = HiddenAct;
            // Both spellings, so transformers 4.x (top-level) and 5.x (rope_parameters) read the same theta.
            o["rope_theta"] = RopeTheta;
            o["rope_parameters"] = new JsonObject { ["rope_theta"] = RopeTheta, ["rope_type"] = "default" };
            o["attention_dropout"] = AttentionDropout; o["mlp_bias"] = MlpBias;
            if (ModelType != "qwen2") o["attention_bias"] = AttentionBias;
            if (ModelType == "qwen2") o["use_sliding_window"] = false;
        }
        if (BosTokenId is long b) o["bos_token_id"] = b;
        if (EosTokenIds.Count == 1) o["eos_token_id"] = EosTokenIds[0];
        else if (EosTokenIds.Count > 1) o["eos_token_id"] = new JsonArray(EosTokenIds.Select(e => (JsonNode)e).ToArray());
        if (PadTokenId is long p) o["pad_token_id"] = p;
        o["dtype"] = "float32";
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    static JsonObject ParseObject(string json, string path)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = 64 }); }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException)
        { throw new CheckpointFormatException($"{path}: field '(root)': not valid JSON: {e.Message}", e) { FilePath = path }; }
        return node as JsonObject ?? throw new CheckpointFormatException($"{path}: field '(root)': must be a JSON object") { FilePath = path };
    }

    /// <summary>Typed field access where every failure names the file and the field.</summary>
    sealed class Reader(JsonObject o, string path)
    {
        public CheckpointFormatException Bad(string field, string what) => new($"{path}: field '{field}': {what}") { FilePath = path };

        JsonValue? Get(string a, string? b = null)
        {
            JsonNode? n = o[a];
            if (b != null) n = n is JsonObject sub ? sub[b] : null;
            if (n == null) return null;
            return n as JsonValue ?? throw Bad(b == null ? a : $"{a}.{b}", "expected a scalar value");
        }

        public string? Str(string a, string? b = null)
        {
            var v = Get(a, b);
            if (v == null) return null;
            return v.TryGetValue(out string? s) ? s : throw Bad(b == null ? a : $"{a}.{b}", "expected a string");
        }

        public double? Dbl(string a, string? b = null)
        {
            var v = Get(a, b);
            if (v == null) return null;
            if (v.GetValueKind() != JsonValueKind.Number) throw Bad(b == null ? a : $"{a}.{b}", "expected a number");
            return v.GetValue<double>();
        }

        public long? Long(string a)
        {
            var v = Get(a);
            if (v == null) return null;
            if (v.GetValueKind() != JsonValueKind.Number || !v.TryGetValue(out long l))
            {
                // Some configs write ids as 2.0; accept integral doubles only.
                if (v.GetValueKind() == JsonValueKind.Number && v.GetValue<double>() is double d && d == Math.Floor(d) && Math.Abs(d) < 1e15) return (long)d;
                throw Bad(a, "expected an integer");
            }
            return l;
        }

        public int? Int(string a)
        {
            long? l = Long(a);
            if (l == null) return null;
            if (l < int.MinValue || l > int.MaxValue) throw Bad(a, $"value {l} out of range");
            return (int)l;
        }

        public int ReqInt(string a) => Int(a) ?? throw Bad(a, "required field is missing");

        public bool? Bool(string a)
        {
            var v = Get(a);
            if (v == null) return null;
            return v.GetValueKind() switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw Bad(a, "expected true/false") };
        }

        public IReadOnlyList<long> LongList(string a)
        {
            var n = o[a];
            if (n == null) return [];
            if (n is JsonArray arr)
                return arr.Select((x, i) => x is JsonValue v && v.TryGetValue(out long l) ? l : throw Bad($"{a}[{i}]", "expected an integer")).ToList();
            return [Long(a)!.Value];
        }
    }
}
