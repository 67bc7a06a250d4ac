using System.Text.Json;
using System.Text.Json.Nodes;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using ML.Finetune.Training;
using static TorchSharp.torch;

namespace ML.Finetune.Adapters;

/// <summary>
/// Reads and writes PEFT prompt-learning adapters (adapter_config.json + adapter_model.safetensors holding
/// <c>prompt_embeddings</c>) for <see cref="PromptTuningMethod"/> (PROMPT_TUNING) and <see cref="PrefixTuningMethod"/>
/// (PREFIX_TUNING). Written adapters have <c>inference_mode: true</c> and, with a projection, hold the projected
/// prefix only (as PEFT's save_pretrained does), so PEFT's PeftModel.from_pretrained can load them.
/// </summary>
public static class PeftPromptLearning
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";
    public const string PeftVersion = "0.20.0";

    /// <summary>
    /// token_dim, num_attention_heads and num_layers as PEFT's _prepare_prompt_learning_config computes them. For prefix
    /// tuning on a model whose config has num_key_value_heads (every family but GPT-2) PEFT stores the KV layout:
    /// token_dim = head_dim · n_kv with the config's head_dim (Qwen3, Gemma: ≠ hidden/heads), else hidden/heads.
    /// </summary>
    public static (int TokenDim, int NumAttentionHeads, int NumLayers) PeftDims(CausalLMConfig c, bool prefixTuning)
    {
        if (prefixTuning && !c.IsGpt2) return (c.HeadDim * c.NumKeyValueHeads, c.NumKeyValueHeads, c.NumLayers);
        return (c.HiddenSize, c.NumHeads, c.NumLayers);
    }

    /// <summary>Loads a PEFT prompt-tuning or prefix-tuning adapter for <paramref name="model"/> (attached, base frozen).</summary>
    public static IFinetuneMethod Load(string folder, CausalLM model)
    {
        var cfg = ReadConfig(folder);
        string type = (string?)cfg["peft_type"] ?? throw new InvalidDataException($"{ConfigFile}: field 'peft_type' is missing");
        return type switch
        {
            "PROMPT_TUNING" => LoadPromptTuning(folder, model),
            "PREFIX_TUNING" => LoadPrefixTuning(folder, model),
            _ => throw new NotSupportedException($"{Path.Combine(folder, ConfigFile)}: peft_type '{type}' is not supported here (only PROMPT_TUNING and PREFIX_TUNING)"),
        };
    }

    public static PromptTuningMethod LoadPromptTuning(string folder, CausalLM model)
    {
        var cfg = ReadConfig(folder);
        ExpectType(folder, cfg, "PROMPT_TUNING");
        int k = Int(cfg, "num_virtual_tokens");
        CheckDims(folder, cfg, model, prefixTuning: false);
        var method = new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = k });
        method.Attach(model, 0);
        LoadTable(folder, method, [k, model.Config.HiddenSize]);
        return method;
    }

    public static PrefixTuningMethod LoadPrefixTuning(string folder, CausalLM model)
    {
        var cfg = ReadConfig(folder);
        ExpectType(folder, cfg, "PREFIX_TUNING");
        int p = Int(cfg, "num_virtual_tokens");
        CheckDims(folder, cfg, model, prefixTuning: true);
        // The saved tensor is always the (projected) table; the MLP is never part of a PEFT adapter.
        // With prefix_projection the options keep the flag (and the export says so again), but LoadState folds.
        bool proj = cfg["prefix_projection"] is JsonValue pv && pv.TryGetValue(out bool b) && b;
        int hidden = proj && cfg["encoder_hidden_size"] is JsonValue hv && hv.TryGetValue(out int h) && h > 0 ? h : 1;
        var method = new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = p, PrefixProjection = proj, EncoderHiddenSize = hidden });
        method.Attach(model, 0);
        LoadTable(folder, method, [p, (long)model.Config.NumLayers * 2 * method.TokenDim]);
        return method;
    }

    /// <summary>Writes the adapter so that PEFT can load it on the same base model.</summary>
    public static void Save(IFinetuneMethod method, CausalLM model, string folder, string baseModelNameOrPath)
    {
        Directory.CreateDirectory(folder);
        JsonObject cfg;
        Tensor table;
        using var scope = NewDisposeScope();
        switch (method)
        {
            case PromptTuningMethod pt:
            {
                var (td, heads, layers) = PeftDims(model.Config, prefixTuning: false);
                var o = pt.Options;
                bool text = o.Init == PromptTuningInit.Text && !string.IsNullOrEmpty(o.InitText);
                cfg = new JsonObject
                {
                    ["auto_mapping"] = null,
                    ["base_model_name_or_path"] = baseModelNameOrPath,
                    ["inference_mode"] = true,
                    ["modules_to_save"] = null,
                    ["num_attention_heads"] = heads,
                    ["num_layers"] = layers,
                    ["num_transformer_submodules"] = 1,
                    ["num_virtual_tokens"] = pt.NumVirtualTokens,
                    ["peft_type"] = "PROMPT_TUNING",
                    ["peft_version"] = PeftVersion,
                    // TEXT needs the text and a tokenizer in PEFT's config check; without the text we say RANDOM
                    // (the init only matters when PEFT trains from scratch, which it does not for a loaded adapter).
                    ["prompt_tuning_init"] = text ? "TEXT" : o.Init == PromptTuningInit.SampleVocab ? "SAMPLE_VOCAB" : "RANDOM",
                    ["prompt_tuning_init_text"] = text ? o.InitText : null,
                    ["revision"] = null,
                    ["task_type"] = "CAUSAL_LM",
                    ["token_dim"] = td,
                    ["tokenizer_kwargs"] = null,
                    ["tokenizer_name_or_path"] = text ? baseModelNameOrPath : null,
                };
                table = pt.SoftPrompt;
                break;
            }
            case PrefixTuningMethod px:
            {
                var (td, heads, layers) = PeftDims(model.Config, prefixTuning: true);
                cfg = new JsonObject
                {
                    ["auto_mapping"] = null,
                    ["base_model_name_or_path"] = baseModelNameOrPath,
                    ["encoder_hidden_size"] = px.Options.PrefixProjection ? px.Options.EncoderHiddenSize : td, // peft defaults it to token_dim
                    ["inference_mode"] = true,
                    ["init_weights"] = null,
                    ["modules_to_save"] = null,
                    ["num_attention_heads"] = heads,
                    ["num_layers"] = layers,
                    ["num_transformer_submodules"] = 1,
                    ["num_virtual_tokens"] = px.NumVirtualTokens,
                    ["peft_type"] = "PREFIX_TUNING",
                    ["peft_version"] = PeftVersion,
                    ["prefix_projection"] = px.Options.PrefixProjection,
                    ["revision"] = null,
                    ["task_type"] = "CAUSAL_LM",
                    ["token_dim"] = td,
                };
                using (no_grad()) table = px.PromptEmbeddings(); // projected output when the MLP is still there
                break;
            }
            default:
                throw new NotSupportedException($"method '{method.Name}' has no PEFT prompt-learning format");
        }
        var t = table.detach().to(ScalarType.Float32).cpu().contiguous();
        SafeTensors.Save(Path.Combine(folder, WeightsFile), new Dictionary<string, Tensor> { ["prompt_embeddings"] = t },
            new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(folder, ConfigFile), cfg.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    static JsonObject ReadConfig(string folder)
    {
        var path = Path.Combine(folder, ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"PEFT adapter config not found: {path}", path);
        return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object");
    }

    static void ExpectType(string folder, JsonObject cfg, string type)
    {
        var t = (string?)cfg["peft_type"];
        if (t != type)
            throw new NotSupportedException($"{Path.Combine(folder, ConfigFile)}: peft_type '{t}' is not supported by this loader (expected {type})");
    }

    static int Int(JsonObject cfg, string field) =>
        cfg[field] is JsonValue v && v.TryGetValue(out int i) ? i : throw new InvalidDataException($"{ConfigFile}: field '{field}' is missing or not an integer");

    static void CheckDims(string folder, JsonObject cfg, CausalLM model, bool prefixTuning)
    {
        var (td, heads, layers) = PeftDims(model.Config, prefixTuning);
        var path = Path.Combine(folder, ConfigFile);
        if ((int?)cfg["num_transformer_submodules"] is int s && s != 1)
            throw new NotSupportedException($"{path}: num_transformer_submodules {s} (encoder-decoder) is not supported; causal LMs use 1");
        void Check(string field, int expected)
        {
            if (cfg[field] is null) return; // optional in old configs
            int got = Int(cfg, field);
            if (got != expected)
                throw new InvalidDataException($"{path}: field '{field}' is {got} but the model has {expected}");
        }
        Check("token_dim", td);
        Check("num_layers", layers);
        Check("num_attention_heads", heads);
    }

    static void LoadTable(string folder, IFinetuneMethod method, long[] shape)
    {
        var path = Path.Combine(folder, WeightsFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"PEFT adapter weights not found: {path}", path);
        using var scope = NewDisposeScope();
        var tensors = SafeTensors.Load(path);
        if (!tensors.TryGetValue("prompt_embeddings", out var t))
            throw new InvalidDataException($"{path}: tensor 'prompt_embeddings' is missing (keys: {string.Join(", ", tensors.Keys)})");
        if (!t.shape.SequenceEqual(shape))
            throw new InvalidDataException($"{path}: tensor 'prompt_embeddings' has shape [{string.Join(",", t.shape)}] but the config and model need [{string.Join(",", shape)}]");
        method.LoadState(new Dictionary<string, Tensor> { ["prompt_embeddings"] = t });
    }
}
