using System.Text.Json;
using System.Text.Json.Nodes;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Adapters;

/// <summary>
/// Reads and writes LoRA adapters in the Hugging Face PEFT folder layout: <c>adapter_config.json</c> plus
/// <c>adapter_model.safetensors</c> with keys <c>base_model.model.&lt;module path&gt;.lora_A.weight</c> [r, in] and
/// <c>.lora_B.weight</c> [out, r].
/// <para>
/// GPT-2: HF stores c_attn/c_proj/c_fc as Conv1D with weight [in, out]; our loader transposes them to [out, in]. PEFT's
/// lora_A/lora_B shapes do not depend on that ([r, in] and [out, r] either way), so the adapter tensors are written
/// as they are. The exported config says <c>fan_in_fan_out: true</c> for GPT-2 Conv1D targets, which is what PEFT
/// needs to merge s·B·A transposed into a Conv1D weight. When we merge (<see cref="LoraMethod.Merge"/>) the weight is
/// [out, in] and no transpose is applied; the HF-layout export of merged weights transposes it back.
/// </para>
/// </summary>
public static class PeftLoraIO
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";
    const string KeyPrefix = "base_model.model.";
    /// <summary>The PEFT release whose adapter_config.json key set we write (the fixture's).</summary>
    public const string PeftFormatVersion = "0.20.0";
    public static readonly IReadOnlyList<string> SupportedPeftTypes = ["LORA"];

    public static string KeyA(string path) => $"{KeyPrefix}{path}.lora_A.weight";
    public static string KeyB(string path) => $"{KeyPrefix}{path}.lora_B.weight";

    /// <summary>Writes the attached adapters of <paramref name="method"/> to <paramref name="folder"/> (atomic per file).</summary>
    public static void Export(LoraMethod method, string folder, string? baseModelNameOrPath = null)
    {
        if (method.Targets.Count == 0) throw new InvalidOperationException("The LoRA method is not attached to a model");
        Directory.CreateDirectory(folder);
        var c = method.Config;
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using (var scope = torch.NewDisposeScope())
        {
            foreach (var (path, _, a) in method.Targets)
            {
                tensors[KeyA(path)] = a.A.detach().cpu().contiguous();
                tensors[KeyB(path)] = a.B.detach().cpu().contiguous();
            }
            SafeTensors.Save(Path.Combine(folder, WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        }
        bool gpt2 = method.Targets.Any(t => Gpt2LMHeadModel.IsConv1DWeight(t.Path + ".weight"));
        JsonNode targetModules = c.TargetModulesRegex != null
            ? JsonValue.Create(c.TargetModulesRegex)!
            : new JsonArray(ResolvedTargetNames(method).Select(n => (JsonNode)n!).ToArray());
        var o = new JsonObject
        {
            ["alora_invocation_tokens"] = null,
            ["alpha_pattern"] = new JsonObject(),
            ["arrow_config"] = null,
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = baseModelNameOrPath,
            ["bias"] = c.Bias,
            ["corda_config"] = null,
            ["ensure_weight_tying"] = false,
            ["eva_config"] = null,
            ["exclude_modules"] = null,
            ["fan_in_fan_out"] = gpt2,
            ["inference_mode"] = true,
            ["init_lora_weights"] = c.Init == LoraInit.Gaussian ? JsonValue.Create("gaussian") : JsonValue.Create(true),
            ["layer_replication"] = null,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = c.LayersToTransform == null ? null : new JsonArray(c.LayersToTransform.Select(i => (JsonNode)i!).ToArray()),
            ["loftq_config"] = new JsonObject(),
            ["lora_alpha"] = c.Alpha == Math.Floor(c.Alpha) && Math.Abs(c.Alpha) < int.MaxValue ? JsonValue.Create((int)c.Alpha) : JsonValue.Create(c.Alpha),
            ["lora_bias"] = false,
            ["lora_dropout"] = c.Dropout,
            ["lora_ga_config"] = null,
            ["megatron_config"] = null,
            ["megatron_core"] = "megatron.core",
            ["modules_to_save"] = null,
            ["monteclora_config"] = null,
            ["peft_type"] = "LORA",
            ["peft_version"] = PeftFormatVersion,
            ["qalora_group_size"] = 16,
            ["r"] = c.Rank,
            ["rank_pattern"] = new JsonObject(),
            ["revision"] = null,
            ["target_modules"] = targetModules,
            ["target_parameters"] = null,
            ["task_type"] = "CAUSAL_LM",
            ["trainable_token_indices"] = null,
            ["use_bdlora"] = null,
            ["use_dora"] = false,
            ["use_qalora"] = false,
            ["use_rslora"] = c.UseRsLora,
            ["velora_config"] = null,
        };
        AtomicFile.WriteAllText(Path.Combine(folder, ConfigFile), o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// Writes the adapters of a LoRA-finetuned <see cref="ML.Finetune.Transformers.FinetuneTransformer"/> as a PEFT
    /// folder; base_model_name_or_path is the base model folder recorded in the transformer.
    /// </summary>
    public static void Export(ML.Finetune.Transformers.FinetuneTransformer transformer, string folder)
    {
        if (transformer.Method is not LoraMethod lora)
            throw new ArgumentException($"The transformer was trained with method '{transformer.Method.Name}', not LoRA; only LoRA adapters export to PEFT format.", nameof(transformer));
        Export(lora, folder, transformer.BaseModel.Path);
    }

    /// <summary>The target names as PEFT records them: the given names, or (defaults / "all-linear") the distinct leaf
    /// names of the adapted layers.</summary>
    static IEnumerable<string> ResolvedTargetNames(LoraMethod m)
    {
        var names = m.Config.TargetModules;
        if (names != null && !(names.Count == 1 && names[0] == LoraConfig.AllLinear)) return names;
        return m.Targets.Select(t => t.Path[(t.Path.LastIndexOf('.') + 1)..]).Distinct().OrderBy(n => n, StringComparer.Ordinal);
    }

    /// <summary>Reads adapter_config.json into a <see cref="LoraConfig"/>; refuses what we cannot reproduce.</summary>
    public static LoraConfig ReadConfig(string folder)
    {
        string path = Path.Combine(folder, ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"PEFT adapter config not found: {path}", path);
        JsonObject o;
        try { o = JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new InvalidDataException($"{path}: not a JSON object"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e); }
        string? type = o["peft_type"]?.GetValue<string>();
        if (type == null || !SupportedPeftTypes.Contains(type))
            throw new NotSupportedException($"{path}: peft_type '{type ?? "(missing)"}' is not supported by the LoRA importer (supported: {string.Join(", ", SupportedPeftTypes)})");
        if (o["use_dora"]?.GetValue<bool>() == true) throw new NotSupportedException($"{path}: use_dora true is not supported (plain LoRA only)");
        foreach (var k in new[] { "rank_pattern", "alpha_pattern" })
            if (o[k] is JsonObject p && p.Count > 0) throw new NotSupportedException($"{path}: field '{k}' (per-module ranks/alphas) is not supported");
        if (o["modules_to_save"] is JsonArray { Count: > 0 }) throw new NotSupportedException($"{path}: field 'modules_to_save' is not supported");
        if (o["layers_pattern"] is JsonNode lp && lp.GetValueKind() != JsonValueKind.Null)
            throw new NotSupportedException($"{path}: field 'layers_pattern' is not supported");
        var c = new LoraConfig
        {
            Rank = o["r"]?.GetValue<int>() ?? throw new InvalidDataException($"{path}: field 'r' is missing"),
            Alpha = o["lora_alpha"]?.GetValue<double>() ?? 8,
            Dropout = o["lora_dropout"]?.GetValue<double>() ?? 0,
            UseRsLora = o["use_rslora"]?.GetValue<bool>() ?? false,
            Bias = o["bias"]?.GetValue<string>() ?? "none",
        };
        var init = o["init_lora_weights"];
        c.Init = init != null && init.GetValueKind() == JsonValueKind.String && init.GetValue<string>() == "gaussian" ? LoraInit.Gaussian : LoraInit.Default;
        switch (o["target_modules"])
        {
            case JsonArray arr: c.TargetModules = arr.Select(n => n!.GetValue<string>()).ToList(); break;
            case JsonValue v when v.GetValueKind() == JsonValueKind.String:
                var s = v.GetValue<string>();
                if (s == LoraConfig.AllLinear) c.TargetModules = [s]; else c.TargetModulesRegex = s;
                break;
        }
        switch (o["layers_to_transform"])
        {
            case JsonArray arr: c.LayersToTransform = arr.Select(n => n!.GetValue<int>()).ToList(); break;
            case JsonValue v when v.GetValueKind() == JsonValueKind.Number: c.LayersToTransform = [v.GetValue<int>()]; break;
        }
        return c;
    }

    /// <summary>
    /// Attaches the PEFT adapter in <paramref name="folder"/> to <paramref name="model"/> (freezing the base) and
    /// loads its weights. The returned method scores with the adapter, keeps training it, or serves as an initialiser.
    /// Nothing is attached when the folder is refused.
    /// </summary>
    public static LoraMethod Import(CausalLM model, string folder)
    {
        var method = new LoraMethod(ReadConfig(folder)) { InitialAdapterFolder = folder };
        method.Attach(model, seed: 0);
        return method;
    }

    /// <summary>The adapter file's path; throws FileNotFoundException when absent.</summary>
    internal static string WeightsPath(string folder)
    {
        string file = Path.Combine(folder, WeightsFile);
        if (!File.Exists(file)) throw new FileNotFoundException($"PEFT adapter weights not found: {file}", file);
        return file;
    }

    /// <summary>Checks the adapter file's keys and shapes against the layers LoRA will adapt (before anything is attached).</summary>
    internal static void CheckWeights(string folder, int rank, IEnumerable<(string Path, AdaptableLinear Layer)> targets)
    {
        string file = WeightsPath(folder);
        var header = SafeTensors.ReadHeader(file);
        var expected = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var (p, l) in targets)
        {
            expected[KeyA(p)] = [rank, l.InFeatures];
            expected[KeyB(p)] = [l.OutFeatures, rank];
        }
        foreach (var (key, info) in header.Tensors)
        {
            if (!expected.TryGetValue(key, out var shape))
                throw new InvalidDataException($"{file}: tensor '{key}' [{string.Join(",", info.Shape)}] does not belong to a LoRA target of this model " +
                                               $"(expected keys like '{expected.Keys.First()}')");
            if (!info.Shape.SequenceEqual(shape))
                throw new InvalidDataException($"{file}: tensor '{key}' has shape [{string.Join(",", info.Shape)}] but this model needs [{string.Join(",", shape)}]");
        }
        var missing = expected.Keys.Where(k => !header.Tensors.ContainsKey(k)).ToList();
        if (missing.Count > 0)
            throw new InvalidDataException($"{file}: missing tensor(s) {string.Join(", ", missing.Take(5))}{(missing.Count > 5 ? $" and {missing.Count - 5} more" : "")}");
    }

    /// <summary>Copies the adapter file's A and B into an attached method (after <see cref="CheckWeights"/>).</summary>
    internal static void CopyWeights(string folder, LoraMethod method)
    {
        var loaded = SafeTensors.Load(WeightsPath(folder));
        try
        {
            using var _ = torch.no_grad();
            foreach (var (p, _, a) in method.Targets)
            {
                a.A.copy_(loaded[KeyA(p)]);
                a.B.copy_(loaded[KeyB(p)]);
            }
        }
        finally { foreach (var t in loaded.Values) t.Dispose(); }
    }
}
