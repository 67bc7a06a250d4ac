using System.Text.Json;

namespace ML.Finetune.Tokenization;

/// <summary>Small helpers that turn JSON problems into <see cref="InvalidDataException"/>s naming the file and field.</summary>
internal static class JsonFiles
{
    public static JsonDocument Load(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"Malformed JSON in '{path}' (line {ex.LineNumber + 1}, field path '{ex.Path ?? "$"}'): {ex.Message}", ex);
        }
    }

    public static InvalidDataException Bad(string path, string field, string problem) =>
        new($"Invalid tokenizer file '{path}': field '{field}' {problem}.");

    public static JsonElement? Get(JsonElement obj, string name) =>
        obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public static string? GetString(string path, JsonElement obj, string name, string fieldPath)
    {
        var v = Get(obj, name);
        if (v is null) return null;
        if (v.Value.ValueKind != JsonValueKind.String) throw Bad(path, fieldPath, $"must be a string but is {v.Value.ValueKind}");
        return v.Value.GetString();
    }

    public static bool? GetBool(string path, JsonElement obj, string name, string fieldPath)
    {
        var v = Get(obj, name);
        if (v is null) return null;
        return v.Value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Bad(path, fieldPath, $"must be a boolean but is {v.Value.ValueKind}"),
        };
    }

    public static int GetInt(string path, JsonElement v, string fieldPath)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i))
            throw Bad(path, fieldPath, $"must be an integer but is {v.ValueKind}");
        return i;
    }

    /// <summary>A special token given either as a string or as an AddedToken object (<c>{"content": ...}</c>).</summary>
    public static string? GetTokenString(string path, JsonElement obj, string name)
    {
        var v = Get(obj, name);
        if (v is null) return null;
        if (v.Value.ValueKind == JsonValueKind.String) return v.Value.GetString();
        if (v.Value.ValueKind == JsonValueKind.Object)
            return GetString(path, v.Value, "content", name + ".content") ?? throw Bad(path, name + ".content", "is missing");
        throw Bad(path, name, $"must be a string or an object with 'content' but is {v.Value.ValueKind}");
    }

    /// <summary>A token id given as an integer or a list of integers (first one wins, as for eos_token_id lists).</summary>
    public static int? GetTokenId(string path, JsonElement obj, string name)
    {
        var v = Get(obj, name);
        if (v is null) return null;
        if (v.Value.ValueKind == JsonValueKind.Array)
        {
            int k = 0;
            foreach (var e in v.Value.EnumerateArray()) return GetInt(path, e, $"{name}[{k}]");
            return null;
        }
        return GetInt(path, v.Value, name);
    }
}
