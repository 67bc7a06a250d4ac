using System.Text.Json.Nodes;

namespace ML.Finetune.Models;

/// <summary>
/// One set of rotary-embedding parameters, as transformers 5.x stores it in <c>rope_parameters</c> (4.x: top-level
/// <c>rope_theta</c> plus a <c>rope_scaling</c> dict, whose <c>type</c> key may spell <c>rope_type</c>). The
/// frequencies themselves are computed in <see cref="RotaryEmbedding"/>.
/// </summary>
public sealed record RopeParameters
{
    /// <summary>The rope types we compute (transformers' ROPE_INIT_FUNCTIONS except Gemma 4's "proportional").</summary>
    public static readonly IReadOnlyList<string> SupportedTypes = ["default", "linear", "dynamic", "yarn", "llama3", "longrope"];

    public string Type { get; init; } = "default";
    public double Theta { get; init; } = 10000;
    /// <summary>Only the first int(head_dim · factor) channels of each head are rotated (Phi-3/Phi-4-mini).</summary>
    public double PartialRotaryFactor { get; init; } = 1.0;
    /// <summary>linear, dynamic, yarn, llama3 (and optionally longrope).</summary>
    public double? Factor { get; init; }
    /// <summary>The pre-training context: llama3, yarn, longrope.</summary>
    public int? OriginalMaxPositionEmbeddings { get; init; }
    public double? LowFreqFactor { get; init; }
    public double? HighFreqFactor { get; init; }
    /// <summary>yarn and longrope: the cos/sin scaling; inferred from the factor when null.</summary>
    public double? AttentionFactor { get; init; }
    public double? BetaFast { get; init; }
    public double? BetaSlow { get; init; }
    public double? Mscale { get; init; }
    public double? MscaleAllDim { get; init; }
    /// <summary>yarn: round the correction range to whole dimensions (transformers' default true).</summary>
    public bool Truncate { get; init; } = true;
    /// <summary>longrope: per-frequency divisors for sequences within / beyond the original context.</summary>
    public IReadOnlyList<double>? ShortFactor { get; init; }
    public IReadOnlyList<double>? LongFactor { get; init; }

    public bool Equals(RopeParameters? other) =>
        other is not null && (this with { ShortFactor = null, LongFactor = null }).ToString() == (other with { ShortFactor = null, LongFactor = null }).ToString()
        && SeqEq(ShortFactor, other.ShortFactor) && SeqEq(LongFactor, other.LongFactor);

    static bool SeqEq(IReadOnlyList<double>? a, IReadOnlyList<double>? b) => a is null ? b is null : b is not null && a.SequenceEqual(b);

    public override int GetHashCode() => HashCode.Combine(Type, Theta, Factor);

    /// <summary>The rope types that read original_max_position_embeddings (dynamic uses max_position_embeddings itself).</summary>
    static bool UsesOriginalMax(string type) => type is "llama3" or "yarn" or "longrope";

    /// <summary>The rotated channels per head: int(head_dim · partial_rotary_factor), as transformers truncates it.</summary>
    public int RotaryDim(int headDim) => (int)(headDim * PartialRotaryFactor);

    /// <summary>
    /// Reads one rope dict. <paramref name="theta"/>, <paramref name="partialRotaryFactor"/> and
    /// <paramref name="originalMax"/> are the values from outside the dict (4.x top-level fields), applied the way
    /// transformers' standardize_rope_params does: theta and original_max_position_embeddings only when the dict has
    /// none (Phi-3's top-level original_max_position_embeddings wins, <paramref name="originalMaxOverrides"/>), a
    /// top-level partial_rotary_factor always.
    /// </summary>
    internal static RopeParameters Read(ConfigReader? r, double theta, double? partialRotaryFactor, int maxPositionEmbeddings,
        int? originalMax = null, bool originalMaxOverrides = false, IReadOnlyDictionary<string, string>? typeAliases = null)
    {
        if (r is null)
            return new RopeParameters { Theta = theta, PartialRotaryFactor = partialRotaryFactor ?? 1.0, OriginalMaxPositionEmbeddings = originalMaxOverrides ? originalMax : null };
        string typeKey = r.Has("rope_type") ? "rope_type" : "type";
        string type = r.Str(typeKey) ?? "default";
        if (typeAliases != null && typeAliases.TryGetValue(type, out var alias)) type = alias;
        if (!SupportedTypes.Contains(type))
            throw r.Unsupported(typeKey, $"rope type '{type}' is not supported (supported: {string.Join(", ", SupportedTypes)})");
        double Positive(string key, double v) => v > 0 ? v : throw r.Bad(key, $"must be positive, got {v}");
        double Required(string key) => r.Dbl(key) is double v ? Positive(key, v) : throw r.Bad(key, $"required for rope type '{type}'");
        int? orig = originalMaxOverrides && originalMax != null ? originalMax : r.Int("original_max_position_embeddings") ?? originalMax;
        var p = new RopeParameters
        {
            Type = type,
            Theta = Positive("rope_theta", r.Dbl("rope_theta") ?? theta),
            PartialRotaryFactor = partialRotaryFactor ?? r.Dbl("partial_rotary_factor") ?? 1.0,
            Factor = r.Dbl("factor"),
            // Phi-3 keeps its top-level value with every rope type (its generate reads it too).
            OriginalMaxPositionEmbeddings = UsesOriginalMax(type) ? orig ?? maxPositionEmbeddings : originalMaxOverrides ? orig : null,
            LowFreqFactor = r.Dbl("low_freq_factor"),
            HighFreqFactor = r.Dbl("high_freq_factor"),
            AttentionFactor = r.Dbl("attention_factor"),
            BetaFast = r.Dbl("beta_fast"),
            BetaSlow = r.Dbl("beta_slow"),
            Mscale = r.Dbl("mscale"),
            MscaleAllDim = r.Dbl("mscale_all_dim"),
            Truncate = r.Bool("truncate") ?? true,
            ShortFactor = r.DoubleList("short_factor"),
            LongFactor = r.DoubleList("long_factor"),
        };
        if (!(p.PartialRotaryFactor > 0 && p.PartialRotaryFactor <= 1))
            throw r.Bad("partial_rotary_factor", $"must be in (0, 1], got {p.PartialRotaryFactor}");
        if (p.OriginalMaxPositionEmbeddings is int om && om <= 0) throw r.Bad("original_max_position_embeddings", $"must be positive, got {om}");
        switch (type)
        {
            case "linear" or "dynamic": Required("factor"); break;
            case "yarn":
                if (p.Factor is double yf) Positive("factor", yf);
                break;
            case "llama3":
                Required("factor");
                double lo = Required("low_freq_factor"), hi = Required("high_freq_factor");
                if (hi <= lo) throw r.Bad("high_freq_factor", $"must be greater than low_freq_factor ({lo}), got {hi}");
                break;
            case "longrope":
                if (p.ShortFactor is null) throw r.Bad("short_factor", "required for rope type 'longrope'");
                if (p.LongFactor is null) throw r.Bad("long_factor", "required for rope type 'longrope'");
                if (p.Factor is double lf) Positive("factor", lf);
                break;
        }
        return p;
    }

    /// <summary>The dict transformers 5.x writes (also valid as a 4.x rope_scaling, which reads the same keys).</summary>
    internal JsonObject ToJson()
    {
        static JsonNode? F(double? v) => CausalLMConfig.Float(v);
        var o = new JsonObject { ["rope_type"] = Type, ["rope_theta"] = F(Theta) };
        if (PartialRotaryFactor != 1.0) o["partial_rotary_factor"] = F(PartialRotaryFactor);
        if (Factor is double f) o["factor"] = F(f);
        if (OriginalMaxPositionEmbeddings is int om && UsesOriginalMax(Type)) o["original_max_position_embeddings"] = om;
        if (LowFreqFactor is double lo) o["low_freq_factor"] = F(lo);
        if (HighFreqFactor is double hi) o["high_freq_factor"] = F(hi);
        if (AttentionFactor is double af) o["attention_factor"] = F(af);
        if (BetaFast is double bf) o["beta_fast"] = F(bf);
        if (BetaSlow is double bs) o["beta_slow"] = F(bs);
        if (Mscale is double ms) o["mscale"] = F(ms);
        if (MscaleAllDim is double md) o["mscale_all_dim"] = F(md);
        if (!Truncate) o["truncate"] = false;
        if (ShortFactor is not null) o["short_factor"] = new JsonArray(ShortFactor.Select(x => F(x)).ToArray());
        if (LongFactor is not null) o["long_factor"] = new JsonArray(LongFactor.Select(x => F(x)).ToArray());
        return o;
    }
}
