using System.Text.Json;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Chat;

/// <summary>
/// Finds a model folder's chat templates and the special-token variables the way transformers 5 does when it loads
/// a tokenizer: <c>chat_template.jinja</c> and <c>additional_chat_templates/*.jinja</c> take priority over the
/// <c>chat_template</c> field of <c>tokenizer_config.json</c> (a string, or a list of <c>{"name", "template"}</c>).
/// </summary>
internal static class ChatTemplateFiles
{
    public const string TemplateFile = "chat_template.jinja";
    public const string AdditionalTemplatesFolder = "additional_chat_templates";
    public const string TokenizerConfigFile = "tokenizer_config.json";
    public const string SpecialTokensMapFile = "special_tokens_map.json";
    /// <summary>Older processors' file (<c>{"chat_template": "..."}</c>); used only when nothing else has a template.</summary>
    public const string LegacyProcessorFile = "chat_template.json";

    /// <summary>transformers' SPECIAL_TOKENS_ATTRIBUTES: always passed to the template when set.</summary>
    private static readonly string[] s_namedTokens = { "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token" };

    public static (Dictionary<string, string> Templates, string Source) ReadTemplates(string folder)
    {
        var templates = new Dictionary<string, string>(StringComparer.Ordinal);
        string single = Path.Combine(folder, TemplateFile);
        if (File.Exists(single)) templates["default"] = File.ReadAllText(single);
        string extraFolder = Path.Combine(folder, AdditionalTemplatesFolder);
        if (Directory.Exists(extraFolder))
            foreach (var file in Directory.EnumerateFiles(extraFolder, "*.jinja").OrderBy(f => f, StringComparer.Ordinal))
                templates[Path.GetFileNameWithoutExtension(file)] = File.ReadAllText(file);
        if (templates.Count > 0) return (templates, File.Exists(single) ? single : extraFolder);

        string config = Path.Combine(folder, TokenizerConfigFile);
        if (File.Exists(config))
        {
            using var doc = JsonFiles.Load(config);
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("chat_template", out var field)
                && field.ValueKind != JsonValueKind.Null)
                return (ParseTemplateField(field, config, "chat_template"), config);
        }
        string legacy = Path.Combine(folder, LegacyProcessorFile);
        if (File.Exists(legacy))
        {
            using var doc = JsonFiles.Load(legacy);
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("chat_template", out var field)
                && field.ValueKind != JsonValueKind.Null)
                return (ParseTemplateField(field, legacy, "chat_template"), legacy);
        }
        throw new FileNotFoundException(
            $"No chat template in '{folder}'. Looked for {TemplateFile}, {AdditionalTemplatesFolder}/*.jinja, the 'chat_template' field of " +
            $"{TokenizerConfigFile}, and {LegacyProcessorFile}. Base models usually have none: pass a template explicitly.", Path.Combine(folder, TemplateFile));
    }

    /// <summary>A <c>chat_template</c> field: a string, or a list of <c>{"name": ..., "template": ...}</c>.</summary>
    public static Dictionary<string, string> ParseTemplateField(JsonElement field, string file, string fieldName)
    {
        var templates = new Dictionary<string, string>(StringComparer.Ordinal);
        if (field.ValueKind == JsonValueKind.String)
        {
            templates["default"] = field.GetString()!;
            return templates;
        }
        if (field.ValueKind != JsonValueKind.Array)
            throw JsonFiles.Bad(file, fieldName, $"must be a string or a list of {{\"name\", \"template\"}} objects, but is {field.ValueKind}");
        int i = 0;
        foreach (var item in field.EnumerateArray())
        {
            string at = $"{fieldName}[{i++}]";
            if (item.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(file, at, "must be an object with 'name' and 'template'");
            string name = JsonFiles.GetString(file, item, "name", at + ".name") ?? throw JsonFiles.Bad(file, at + ".name", "is missing");
            string template = JsonFiles.GetString(file, item, "template", at + ".template") ?? throw JsonFiles.Bad(file, at + ".template", "is missing");
            if (!templates.TryAdd(name, template)) throw JsonFiles.Bad(file, at + ".name", $"repeats the template name '{name}'");
        }
        if (templates.Count == 0) throw JsonFiles.Bad(file, fieldName, "is an empty list");
        return templates;
    }

    /// <summary>
    /// The special tokens transformers passes to the template (its <c>special_tokens_map</c>): the named tokens
    /// (bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token; a string or an AddedToken object)
    /// and model-specific string fields ending in <c>_token</c> (or given in an <c>extra_special_tokens</c> object).
    /// Like transformers, <c>special_tokens_map.json</c> overrides tokenizer_config.json when the config has no
    /// <c>added_tokens_decoder</c>.
    /// </summary>
    public static Dictionary<string, string> ReadSpecialTokens(string folder)
    {
        var tokens = new Dictionary<string, string>(StringComparer.Ordinal);
        string config = Path.Combine(folder, TokenizerConfigFile);
        bool hasAddedTokensDecoder = false;
        if (File.Exists(config))
        {
            using var doc = JsonFiles.Load(config);
            if (doc.RootElement.ValueKind == JsonValueKind.Object)
            {
                hasAddedTokensDecoder = doc.RootElement.TryGetProperty("added_tokens_decoder", out _);
                Collect(doc.RootElement, tokens, config);
            }
        }
        string map = Path.Combine(folder, SpecialTokensMapFile);
        if (!hasAddedTokensDecoder && File.Exists(map))
        {
            using var doc = JsonFiles.Load(map);
            if (doc.RootElement.ValueKind == JsonValueKind.Object) Collect(doc.RootElement, tokens, map);
        }
        return tokens;
    }

    private static void Collect(JsonElement root, Dictionary<string, string> tokens, string file)
    {
        foreach (var p in root.EnumerateObject())
        {
            if (p.Name == "extra_special_tokens" && p.Value.ValueKind == JsonValueKind.Object)
            {
                foreach (var extra in p.Value.EnumerateObject())
                    if (TokenText(extra.Value, named: true) is { } t) tokens[extra.Name] = t;
                continue;
            }
            bool named = s_namedTokens.Contains(p.Name);
            if (!named && !p.Name.EndsWith("_token", StringComparison.Ordinal)) continue;
            // Model-specific tokens count only as plain strings (transformers collects them before it converts
            // AddedToken objects); the named ones may be either.
            if (TokenText(p.Value, named) is { } text) tokens[p.Name] = text;
            else if (named && p.Value.ValueKind == JsonValueKind.Null) tokens.Remove(p.Name);
            else if (named && p.Value.ValueKind != JsonValueKind.Null)
                throw JsonFiles.Bad(file, p.Name, "must be a string or an object with a 'content' string");
        }
    }

    private static string? TokenText(JsonElement value, bool named) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString(),
        JsonValueKind.Object when named && value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
        _ => null,
    };
}
