using System.Text.Json;
using System.Text.Json.Nodes;
using ML.Finetune.Checkpoints;

namespace ML.Finetune.Models;

/// <summary>
/// Typed access to one JSON object of a config file where every failure names the file and the field
/// (<c>rope_parameters.factor</c> for nested objects). Absent and <c>null</c> are told apart where HF tells them apart
/// (<see cref="Has"/>): some fields default when absent but switch a feature off when null.
/// </summary>
internal sealed class ConfigReader(JsonObject o, string path, string prefix = "")
{
    public string Path => path;

    string Name(string key) => prefix + key;

    public CheckpointFormatException Bad(string field, string what) => new($"{path}: field '{Name(field)}': {what}") { FilePath = path };

    public UnsupportedModelException Unsupported(string field, string what) => new($"{path}: field '{Name(field)}': {what}");

    /// <summary>True when the key is present (also when its value is null).</summary>
    public bool Has(string key) => o.ContainsKey(key);

    public IEnumerable<string> Keys => o.Select(kv => kv.Key);

    /// <summary>The node under a key as it is (null when absent or null).</summary>
    public JsonNode? Raw(string key) => o[key];

    JsonValue? Value(string key)
    {
        JsonNode? n = o[key];
        if (n == null) return null;
        return n as JsonValue ?? throw Bad(key, "expected a scalar value");
    }

    /// <summary>The nested object under <paramref name="key"/>, or null when absent/null; anything else is an error.</summary>
    public ConfigReader? Object(string key)
    {
        JsonNode? n = o[key];
        if (n == null) return null;
        return n is JsonObject sub ? new ConfigReader(sub, path, Name(key) + ".") : throw Bad(key, "expected an object or null");
    }

    public string? Str(string key)
    {
        var v = Value(key);
        if (v == null) return null;
        return v.TryGetValue(out string? s) ? s : throw Bad(key, "expected a string");
    }

    public double? Dbl(string key)
    {
        var v = Value(key);
        if (v == null) return null;
        if (v.GetValueKind() != JsonValueKind.Number) throw Bad(key, "expected a number");
        double d = v.GetValue<double>();
        return double.IsFinite(d) ? d : throw Bad(key, "expected a finite number");
    }

    public long? Long(string key)
    {
        var v = Value(key);
        if (v == null) return null;
        if (v.GetValueKind() != JsonValueKind.Number || !v.TryGetValue(out long l))
        {
            // Some configs write ids as 2.0; accept integral doubles only.
            if (v.GetValueKind() == JsonValueKind.Number && v.GetValue<double>() is double d && d == Math.Floor(d) && Math.Abs(d) < 1e15) return (long)d;
            throw Bad(key, "expected an integer");
        }
        return l;
    }

    public int? Int(string key)
    {
        long? l = Long(key);
        if (l == null) return null;
        if (l < int.MinValue || l > int.MaxValue) throw Bad(key, $"value {l} out of range");
        return (int)l;
    }

    public int ReqInt(string key) => Int(key) ?? throw Bad(key, "required field is missing");

    public bool? Bool(string key)
    {
        var v = Value(key);
        if (v == null) return null;
        return v.GetValueKind() switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw Bad(key, "expected true/false") };
    }

    public IReadOnlyList<long> LongList(string key)
    {
        var n = o[key];
        if (n == null) return [];
        if (n is JsonArray arr)
            return arr.Select((x, i) => x is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out long l) ? l : throw Bad($"{key}[{i}]", "expected an integer")).ToList();
        return [Long(key)!.Value];
    }

    public IReadOnlyList<double>? DoubleList(string key)
    {
        var n = o[key];
        if (n == null) return null;
        if (n is not JsonArray arr) throw Bad(key, "expected a list of numbers");
        return arr.Select((x, i) => x is JsonValue v && v.GetValueKind() == JsonValueKind.Number && double.IsFinite(v.GetValue<double>())
            ? v.GetValue<double>() : throw Bad($"{key}[{i}]", "expected a finite number")).ToList();
    }

    public IReadOnlyList<string>? StrList(string key)
    {
        var n = o[key];
        if (n == null) return null;
        if (n is not JsonArray arr) throw Bad(key, "expected a list of strings");
        return arr.Select((x, i) => x is JsonValue v && v.TryGetValue(out string? s) ? s : throw Bad($"{key}[{i}]", "expected a string")).ToList();
    }
}
