using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ML.Finetune.Models;

/// <summary>Writing config.json with each family's native field names, readable by transformers 4.x and 5.x.</summary>
public sealed partial record CausalLMConfig
{
    /// <summary>Writes a config.json that transformers can load (native field names for the model type).</summary>
    public string ToJson()
    {
        var f = GetFamily();
        var o = new JsonObject { ["model_type"] = ModelType, ["architectures"] = new JsonArray(f.Architecture), ["vocab_size"] = VocabSize, ["tie_word_embeddings"] = TieWordEmbeddings };
        if (IsGpt2)
        {
            o["n_embd"] = HiddenSize; o["n_layer"] = NumLayers; o["n_head"] = NumHeads; o["n_inner"] = IntermediateSize;
            o["n_positions"] = MaxPositionEmbeddings; o["layer_norm_epsilon"] = Float(NormEps); o["activation_function"] = HiddenAct;
            o["attn_pdrop"] = Float(AttentionDropout); o["resid_pdrop"] = Float(ResidualDropout); o["embd_pdrop"] = Float(EmbeddingDropout);
        }
        else WriteDecoder(o, f);
        if (BosTokenId is long b) o["bos_token_id"] = b;
        if (EosTokenIds.Count == 1) o["eos_token_id"] = EosTokenIds[0];
        else if (EosTokenIds.Count > 1) o["eos_token_id"] = new JsonArray(EosTokenIds.Select(e => (JsonNode)e).ToArray());
        if (PadTokenId is long p) o["pad_token_id"] = p;
        o["dtype"] = "float32";
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    void WriteDecoder(JsonObject o, ModelFamily f)
    {
        o["hidden_size"] = HiddenSize; o["num_hidden_layers"] = NumLayers; o["num_attention_heads"] = NumHeads;
        o["num_key_value_heads"] = NumKeyValueHeads; o["head_dim"] = HeadDim; o["intermediate_size"] = IntermediateSize;
        o["max_position_embeddings"] = MaxPositionEmbeddings; o["rms_norm_eps"] = Float(NormEps); o[f.ActivationField] = HiddenAct;
        o["attention_dropout"] = Float(AttentionDropout);
        if (f.AttentionBiasField) o["attention_bias"] = AttentionBias;
        if (f.MlpBiasField) o["mlp_bias"] = MlpBias;
        if (f.ResidualDropout) { o["resid_pdrop"] = Float(ResidualDropout); o["embd_pdrop"] = Float(0); }
        WriteRope(o, f);
        switch (f.SlidingWindow)
        {
            case SlidingWindowRule.AllLayers:
                o["sliding_window"] = SlidingWindow;
                break;
            case SlidingWindowRule.QwenLayers:
                o["use_sliding_window"] = SlidingWindow is not null;
                o["sliding_window"] = SlidingWindow;
                int firstSliding = Enumerable.Range(0, NumLayers).FirstOrDefault(i => WindowOf(i) is not null, NumLayers);
                o["max_window_layers"] = firstSliding;
                o["layer_types"] = LayerTypesJson();
                break;
            case SlidingWindowRule.LayerTypes:
                o["sliding_window"] = SlidingWindow;
                o["layer_types"] = LayerTypesJson();
                break;
        }
        if (f.Gemma) o["query_pre_attn_scalar"] = QueryPreAttnScalar is double q && q == Math.Floor(q) ? JsonValue.Create((long)q) : Float(QueryPreAttnScalar);
        if (f.AttentionSoftcap) o["attn_logit_softcapping"] = Float(AttnLogitSoftcapping);
        if (f.FinalSoftcap) o["final_logit_softcapping"] = Float(FinalLogitSoftcapping);
    }

    JsonArray LayerTypesJson() =>
        new(Enumerable.Range(0, NumLayers).Select(i => (JsonNode)(WindowOf(i) is null ? FullAttention : SlidingAttention)).ToArray());

    /// <summary>
    /// RoPE in both forms: <c>rope_parameters</c> for transformers 5.x and top-level <c>rope_theta</c> plus
    /// <c>rope_scaling</c> (null for default RoPE) for 4.x; both read back to the same parameters.
    /// </summary>
    void WriteRope(JsonObject o, ModelFamily f)
    {
        o["rope_theta"] = Float(Rope.Theta);
        if (SlidingRope is not null)
        {
            o["rope_parameters"] = new JsonObject { [FullAttention] = Rope.ToJson(), [SlidingAttention] = SlidingRope.ToJson() };
            o["rope_local_base_freq"] = Float(SlidingRope.Theta);
        }
        else o["rope_parameters"] = Rope.ToJson();
        JsonObject? scaling = null;
        if (Rope.Type != "default")
        {
            scaling = Rope.ToJson();
            scaling.Remove("rope_theta");
            scaling.Remove("partial_rotary_factor");
            if (f.ModelType == "phi3")
            {
                // transformers 4.x's Phi3Config accepts only {type, short_factor, long_factor} (it takes the original
                // context from the top-level field written below).
                scaling.Remove("rope_type");
                scaling.Remove("original_max_position_embeddings");
                scaling["type"] = Rope.Type;
            }
        }
        o["rope_scaling"] = scaling;
        if (f.PartialRotary)
        {
            o["partial_rotary_factor"] = Float(Rope.PartialRotaryFactor);
            if (Rope.OriginalMaxPositionEmbeddings is int om) o["original_max_position_embeddings"] = om;
        }
    }

    /// <summary>
    /// A number Python reads as a float (3.0, not 3): transformers 5.x configs are strict dataclasses and reject an int
    /// for a float field such as final_logit_softcapping.
    /// </summary>
    internal static JsonNode? Float(double? value)
    {
        if (value is not double d) return null;
        string text = d.ToString("R", CultureInfo.InvariantCulture);
        if (!text.Contains('.') && !text.Contains('E')) text += ".0";
        return JsonNode.Parse(text);
    }
}
