using System.Text.Json;
using System.Text.Json.Nodes;

namespace ML.Finetune.Adapters;

/// <summary>How LoRA's A matrix is initialised (B always starts at zero, so the adapted model starts equal to the base).</summary>
public enum LoraInit
{
    /// <summary>PEFT's default (<c>init_lora_weights=true</c>): A ~ U(−1/√in, 1/√in), i.e. Kaiming-uniform with a=√5 as nn.Linear.</summary>
    Default,
    /// <summary>PEFT's <c>init_lora_weights="gaussian"</c>: A ~ N(0, σ²) with σ = 1/r.</summary>
    Gaussian,
}

/// <summary>
/// Low-rank adaptation settings: each targeted projection y = W x + b becomes y = W x + b + s·B·A·dropout(x),
/// A ∈ ℝ^{r×in}, B ∈ ℝ^{out×r}, s = α/r (or α/√r with <see cref="UseRsLora"/>).
/// </summary>
public sealed class LoraConfig
{
    /// <summary>Special <see cref="TargetModules"/> entry: every projection except the output head (<c>lm_head</c>).</summary>
    public const string AllLinear = "all-linear";

    /// <summary>The rank r (≥ 1 and ≤ min(in, out) of every targeted layer).</summary>
    public int Rank { get; set; } = 8;
    /// <summary>α; the update is scaled by α/r.</summary>
    public double Alpha { get; set; } = 8;
    /// <summary>Dropout probability on the adapter's input (training mode only).</summary>
    public double Dropout { get; set; }
    /// <summary>
    /// Module names matched against module paths as PEFT does: a path matches a name when it equals it or ends with
    /// "." + name. The single entry "all-linear" selects every projection except <c>lm_head</c>. Null (and no
    /// <see cref="TargetModulesRegex"/>) means the model type's PEFT default: q_proj,v_proj for Llama/Qwen2/Mistral,
    /// c_attn for GPT-2.
    /// </summary>
    public IReadOnlyList<string>? TargetModules { get; set; }
    /// <summary>A regular expression that must match a module's whole dotted path (PEFT's string form of target_modules).
    /// Takes precedence over <see cref="TargetModules"/>.</summary>
    public string? TargetModulesRegex { get; set; }
    /// <summary>Scale α/√r instead of α/r (rank-stabilised LoRA).</summary>
    public bool UseRsLora { get; set; }
    public LoraInit Init { get; set; } = LoraInit.Default;
    /// <summary>Only adapt layers with these indices (the number after "layers." / "h." in the path). Null = all.</summary>
    public IReadOnlyList<int>? LayersToTransform { get; set; }
    /// <summary>Only "none" is supported: biases are neither trained nor saved.</summary>
    public string Bias { get; set; } = "none";

    public double Scale => UseRsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank;

    /// <summary>Checks settings that do not depend on the model. Rank vs layer sizes is checked on attach.</summary>
    public void Validate()
    {
        if (Rank <= 0) throw new ArgumentOutOfRangeException(nameof(Rank), Rank, $"LoRA rank must be ≥ 1, got {Rank}");
        if (double.IsNaN(Alpha) || double.IsInfinity(Alpha)) throw new ArgumentOutOfRangeException(nameof(Alpha), Alpha, "LoRA alpha must be finite");
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "LoRA dropout must be in [0, 1)");
        if (Bias != "none") throw new NotSupportedException($"LoRA bias '{Bias}' is not supported (supported: none)");
        if (TargetModules is { Count: 0 } && TargetModulesRegex == null)
            throw new ArgumentException("TargetModules is empty; name at least one module, use \"all-linear\", or leave it null for the model's default", nameof(TargetModules));
    }

    public string ToJson()
    {
        var o = new JsonObject
        {
            ["rank"] = Rank, ["alpha"] = Alpha, ["dropout"] = Dropout,
            ["target_modules"] = TargetModules == null ? null : new JsonArray(TargetModules.Select(t => (JsonNode)t!).ToArray()),
            ["target_modules_regex"] = TargetModulesRegex,
            ["use_rslora"] = UseRsLora, ["init"] = Init.ToString(),
            ["layers_to_transform"] = LayersToTransform == null ? null : new JsonArray(LayersToTransform.Select(i => (JsonNode)i!).ToArray()),
            ["bias"] = Bias,
        };
        return o.ToJsonString();
    }

    public static LoraConfig FromJson(string json)
    {
        var o = JsonNode.Parse(json)!.AsObject();
        return new LoraConfig
        {
            Rank = o["rank"]!.GetValue<int>(),
            Alpha = o["alpha"]!.GetValue<double>(),
            Dropout = o["dropout"]!.GetValue<double>(),
            TargetModules = o["target_modules"]?.AsArray().Select(n => n!.GetValue<string>()).ToList(),
            TargetModulesRegex = o["target_modules_regex"]?.GetValue<string>(),
            UseRsLora = o["use_rslora"]!.GetValue<bool>(),
            Init = Enum.Parse<LoraInit>(o["init"]!.GetValue<string>()),
            LayersToTransform = o["layers_to_transform"]?.AsArray().Select(n => n!.GetValue<int>()).ToList(),
            Bias = o["bias"]?.GetValue<string>() ?? "none",
        };
    }
}
