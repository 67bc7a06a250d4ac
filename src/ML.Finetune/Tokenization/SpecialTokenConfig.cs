using System.Text.Json;

namespace ML.Finetune.Tokenization;

/// <summary>
/// What a model folder's config files say about special tokens. BOS/EOS/PAD/UNK precedence (highest first):
/// tokenizer_config.json, special_tokens_map.json (token strings), config.json, generation_config.json (token ids);
/// each role takes the first file that sets it, and later files never override. A role set to null in
/// tokenizer_config.json or special_tokens_map.json is explicitly absent (no class default applies).
/// </summary>
internal sealed class SpecialTokenConfig
{
    internal sealed record Entry(string File, string Field, string? Token, int? Id);

    public Entry? Bos { get; private set; }
    public Entry? Eos { get; private set; }
    public Entry? Pad { get; private set; }
    public Entry? Unk { get; private set; }
    /// <summary>Roles ("bos_token", ...) set to null explicitly.</summary>
    public HashSet<string> ExplicitlyNull { get; } = new(StringComparer.Ordinal);
    public bool? AddBosToken { get; private set; }
    public bool? AddEosToken { get; private set; }
    public bool? SplitSpecialTokens { get; private set; }
    public bool? AddPrefixSpace { get; private set; }
    public bool? CleanUpTokenizationSpaces { get; private set; }
    public string? TokenizerClass { get; private set; }
    public string? TokenizerConfigPath { get; private set; }
    /// <summary>tokenizer_config.json's added_tokens_decoder (with their flags), then added_tokens.json (plain added tokens).</summary>
    public List<AddedToken> AddedTokens { get; } = new();
    /// <summary>additional_special_tokens / extra_special_tokens: marked special when present.</summary>
    public List<string> AdditionalSpecialTokens { get; } = new();

    public IEnumerable<string> NamedTokens() =>
        new[] { Bos, Eos, Pad, Unk }.Where(e => e?.Token is not null).Select(e => e!.Token!).Concat(AdditionalSpecialTokens);

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
            cfg.Bos ??= cfg.TokenEntry(path, root, "bos_token");
            cfg.Eos ??= cfg.TokenEntry(path, root, "eos_token");
            cfg.Pad ??= cfg.TokenEntry(path, root, "pad_token");
            cfg.Unk ??= cfg.TokenEntry(path, root, "unk_token");
            foreach (var listName in new[] { "additional_special_tokens", "extra_special_tokens" })
                if (JsonFiles.Get(root, listName) is { ValueKind: JsonValueKind.Array } list)
                {
                    int k = 0;
                    foreach (var item in list.EnumerateArray())
                    {
                        string f = $"{listName}[{k++}]";
                        string? tok = item.ValueKind == JsonValueKind.String ? item.GetString()
                            : item.ValueKind == JsonValueKind.Object ? JsonFiles.GetString(path, item, "content", f + ".content")
                            : throw JsonFiles.Bad(path, f, "must be a string or an object with 'content'");
                        if (tok is not null && !cfg.AdditionalSpecialTokens.Contains(tok)) cfg.AdditionalSpecialTokens.Add(tok);
                    }
                }
            if (name != "tokenizer_config.json") continue;
            cfg.TokenizerConfigPath = path;
            cfg.AddBosToken = JsonFiles.GetBool(path, root, "add_bos_token", "add_bos_token");
            cfg.AddEosToken = JsonFiles.GetBool(path, root, "add_eos_token", "add_eos_token");
            cfg.SplitSpecialTokens = JsonFiles.GetBool(path, root, "split_special_tokens", "split_special_tokens");
            cfg.AddPrefixSpace = JsonFiles.GetBool(path, root, "add_prefix_space", "add_prefix_space");
            cfg.CleanUpTokenizationSpaces = JsonFiles.GetBool(path, root, "clean_up_tokenization_spaces", "clean_up_tokenization_spaces");
            cfg.TokenizerClass = JsonFiles.GetString(path, root, "tokenizer_class", "tokenizer_class");
            if (JsonFiles.Get(root, "added_tokens_decoder") is { } dec)
            {
                if (dec.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(path, "added_tokens_decoder", "must be an object");
                foreach (var p in dec.EnumerateObject())
                {
                    string f = $"added_tokens_decoder[\"{p.Name}\"]";
                    if (!int.TryParse(p.Name, out int id)) throw JsonFiles.Bad(path, f, "key must be an integer id");
                    string content = JsonFiles.GetString(path, p.Value, "content", f + ".content") ?? throw JsonFiles.Bad(path, f + ".content", "is missing");
                    bool Flag(string n) => JsonFiles.GetBool(path, p.Value, n, $"{f}.{n}") ?? false;
                    cfg.AddedTokens.Add(new AddedToken(id, content, Flag("special"), Flag("single_word"), Flag("lstrip"), Flag("rstrip"),
                        JsonFiles.GetBool(path, p.Value, "normalized", f + ".normalized")));
                }
            }
        }
        string addedPath = Path.Combine(folder, "added_tokens.json");
        if (File.Exists(addedPath))
        {
            using var doc = JsonFiles.Load(addedPath);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(addedPath, "$", "must be an object mapping tokens to ids");
            foreach (var p in doc.RootElement.EnumerateObject())
                if (!cfg.AddedTokens.Any(t => t.Content == p.Name))
                    cfg.AddedTokens.Add(new AddedToken(JsonFiles.GetInt(addedPath, p.Value, $"[\"{p.Name}\"]"), p.Name, Special: false));
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

    private Entry? TokenEntry(string path, JsonElement root, string field)
    {
        if (root.TryGetProperty(field, out var v) && v.ValueKind == JsonValueKind.Null) ExplicitlyNull.Add(field);
        string? tok = JsonFiles.GetTokenString(path, root, field);
        return tok is null ? null : new Entry(path, field, tok, null);
    }

    private static Entry? IdEntry(string path, JsonElement root, string field)
    {
        int? id = JsonFiles.GetTokenId(path, root, field);
        return id is null ? null : new Entry(path, field, null, id);
    }
}
