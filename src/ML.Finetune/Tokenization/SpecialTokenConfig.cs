using System.Text.Json;

namespace ML.Finetune.Tokenization;

/// <summary>
/// BOS/EOS/PAD gathered from a model folder's config files. Precedence (highest first): tokenizer_config.json,
/// special_tokens_map.json (token strings), config.json, generation_config.json (token ids). Each role takes the
/// first file that sets it; later files never override.
/// </summary>
internal sealed class SpecialTokenConfig
{
    internal sealed record Entry(string File, string Field, string? Token, int? Id);

    public Entry? Bos { get; private set; }
    public Entry? Eos { get; private set; }
    public Entry? Pad { get; private set; }
    public Entry? Unk { get; private set; }
    public bool? AddBosToken { get; private set; }
    /// <summary>Added tokens declared in tokenizer_config.json (added_tokens_decoder) or added_tokens.json.</summary>
    public Dictionary<string, int> AddedTokens { get; } = new(StringComparer.Ordinal);

    public IEnumerable<string> NamedTokens() =>
        new[] { Bos, Eos, Pad, Unk }.Where(e => e?.Token is not null).Select(e => e!.Token!);

    public static SpecialTokenConfig Read(string folder)
    {
        var cfg = new SpecialTokenConfig();
        foreach (var name in new[] { "tokenizer_config.json", "special_tokens_map.json" })
        {
            string path = Path.Combine(folder, name);
            if (!File.Exists(path)) continue;
            using var doc = JsonFiles.Load(path);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(path, "$", "must be a JSON object");
            cfg.Bos ??= TokenEntry(path, root, "bos_token");
            cfg.Eos ??= TokenEntry(path, root, "eos_token");
            cfg.Pad ??= TokenEntry(path, root, "pad_token");
            cfg.Unk ??= TokenEntry(path, root, "unk_token");
            if (name == "tokenizer_config.json")
            {
                cfg.AddBosToken = JsonFiles.GetBool(path, root, "add_bos_token", "add_bos_token");
                if (JsonFiles.Get(root, "added_tokens_decoder") is { } dec)
                {
                    if (dec.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(path, "added_tokens_decoder", "must be an object");
                    foreach (var p in dec.EnumerateObject())
                    {
                        string f = $"added_tokens_decoder[\"{p.Name}\"]";
                        if (!int.TryParse(p.Name, out int id)) throw JsonFiles.Bad(path, f, "key must be an integer id");
                        string content = JsonFiles.GetString(path, p.Value, "content", f + ".content") ?? throw JsonFiles.Bad(path, f + ".content", "is missing");
                        cfg.AddedTokens.TryAdd(content, id);
                    }
                }
            }
        }
        string addedPath = Path.Combine(folder, "added_tokens.json");
        if (File.Exists(addedPath))
        {
            using var doc = JsonFiles.Load(addedPath);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(addedPath, "$", "must be an object mapping tokens to ids");
            foreach (var p in doc.RootElement.EnumerateObject())
                cfg.AddedTokens.TryAdd(p.Name, JsonFiles.GetInt(addedPath, p.Value, $"[\"{p.Name}\"]"));
        }
        foreach (var name in new[] { "config.json", "generation_config.json" })
        {
            string path = Path.Combine(folder, name);
            if (!File.Exists(path)) continue;
            using var doc = JsonFiles.Load(path);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(path, "$", "must be a JSON object");
            cfg.Bos ??= IdEntry(path, root, "bos_token_id");
            cfg.Eos ??= IdEntry(path, root, "eos_token_id");
            cfg.Pad ??= IdEntry(path, root, "pad_token_id");
        }
        return cfg;
    }

    private static Entry? TokenEntry(string path, JsonElement root, string field)
    {
        string? tok = JsonFiles.GetTokenString(path, root, field);
        return tok is null ? null : new Entry(path, field, tok, null);
    }

    private static Entry? IdEntry(string path, JsonElement root, string field)
    {
        int? id = JsonFiles.GetTokenId(path, root, field);
        return id is null ? null : new Entry(path, field, null, id);
    }
}
