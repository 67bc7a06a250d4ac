using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace ML.Finetune.Tokenization;

/// <summary>What a loader found: the tokenizer, its full id space and the tokens it treats as special.</summary>
internal sealed record LoadedTokenizer(
    Tokenizer Tokenizer,
    IReadOnlyDictionary<string, int> TokenToId,
    IReadOnlyDictionary<string, int> SpecialTokens,
    string SourceFile,
    bool? AddBosFromPostProcessor = null,
    string? PostProcessorBosToken = null)
{
    public int VocabSize
    {
        get
        {
            int max = -1;
            foreach (var v in TokenToId.Values) if (v > max) max = v;
            foreach (var v in SpecialTokens.Values) if (v > max) max = v;
            return max + 1;
        }
    }
}

/// <summary>Loaders for HF tokenizer files: tokenizer.json (BPE, WordLevel), vocab.json + merges.txt, tokenizer.model.</summary>
internal static class HfTokenizerLoader
{
    private const string WhitespacePattern = @"\w+|[^\w\s]+";
    private const string WhitespaceSplitPattern = @"\S+";

    // ---------------- tokenizer.json ----------------

    public static LoadedTokenizer LoadTokenizerJson(string path)
    {
        using var doc = JsonFiles.Load(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(path, "$", "must be a JSON object");
        var model = JsonFiles.Get(root, "model") ?? throw JsonFiles.Bad(path, "model", "is missing");
        if (model.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(path, "model", "must be an object");

        string? type = JsonFiles.GetString(path, model, "type", "model.type");
        if (type is null) type = JsonFiles.Get(model, "merges") is not null ? "BPE" : null;
        if (type is null) throw JsonFiles.Bad(path, "model.type", "is missing");

        if (type is not ("BPE" or "WordLevel"))
            throw new NotSupportedException($"Tokenizer file '{path}': model type '{type}' (model.type) is not supported; supported types are BPE and WordLevel.");

        var added = ReadAddedTokens(path, root);
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (content, id, _) in added) specials[content] = id;   // all added tokens are matched whole
        var normalizer = ReadNormalizer(path, JsonFiles.Get(root, "normalizer"));
        var (regex, byteLevel) = ReadPreTokenizer(path, JsonFiles.Get(root, "pre_tokenizer"), "pre_tokenizer");
        var decoder = JsonFiles.Get(root, "decoder");
        if (decoder is { } dec && HasType(dec, "ByteLevel")) byteLevel = true;
        var vocab = ReadVocab(path, model, "model.vocab");
        var (addBos, bosTok) = ReadPostProcessorBos(root);

        var specialOnly = added.Where(a => a.Special).ToDictionary(a => a.Content, a => a.Id, StringComparer.Ordinal);
        switch (type)
        {
            case "BPE":
            {
                if (JsonFiles.GetBool(path, model, "byte_fallback", "model.byte_fallback") == true)
                    throw new NotSupportedException($"Tokenizer file '{path}': BPE model with byte_fallback is not supported by Microsoft.ML.Tokenizers' BpeTokenizer (model.type 'BPE', byte_fallback true).");
                var merges = ReadMerges(path, model);
                var options = new BpeOptions(vocab)
                {
                    Merges = merges,
                    SpecialTokens = specials.Count > 0 ? specials : null,
                    UnknownToken = JsonFiles.GetString(path, model, "unk_token", "model.unk_token"),
                    ContinuingSubwordPrefix = JsonFiles.GetString(path, model, "continuing_subword_prefix", "model.continuing_subword_prefix"),
                    EndOfWordSuffix = JsonFiles.GetString(path, model, "end_of_word_suffix", "model.end_of_word_suffix"),
                    FuseUnknownTokens = JsonFiles.GetBool(path, model, "fuse_unk", "model.fuse_unk") ?? false,
                    ByteLevel = byteLevel,
                    Normalizer = normalizer,
                    PreTokenizer = regex is null ? null : new RegexPreTokenizer(new Regex(regex, RegexOptions.Compiled | RegexOptions.CultureInvariant), specials.Count > 0 ? specials : null),
                };
                var tok = BpeTokenizer.Create(options);
                return new LoadedTokenizer(tok, vocab, specialOnly, path, addBos, bosTok);
            }
            case "WordLevel":
            {
                string unk = JsonFiles.GetString(path, model, "unk_token", "model.unk_token")
                    ?? throw JsonFiles.Bad(path, "model.unk_token", "is missing (WordLevel needs an unknown token)");
                if (!vocab.ContainsKey(unk) && !specials.ContainsKey(unk))
                    throw JsonFiles.Bad(path, "model.unk_token", $"names '{unk}', which is not in model.vocab");
                if (byteLevel)
                    throw new NotSupportedException($"Tokenizer file '{path}': a ByteLevel pre-tokenizer with a WordLevel model is not supported.");
                var pre = regex is null ? null : new RegexPreTokenizer(new Regex(regex, RegexOptions.Compiled | RegexOptions.CultureInvariant), null);
                var tok = new WordLevelTokenizer(vocab, unk, specials, pre, normalizer);
                return new LoadedTokenizer(tok, vocab, specialOnly, path, addBos, bosTok);
            }
            default:
                throw new NotSupportedException($"Tokenizer file '{path}': model type '{type}' (model.type) is not supported; supported types are BPE and WordLevel.");
        }
    }

    private static bool HasType(JsonElement e, string type)
    {
        if (e.ValueKind != JsonValueKind.Object) return false;
        if (e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == type) return true;
        foreach (var listName in new[] { "decoders", "pretokenizers", "processors" })
            if (e.TryGetProperty(listName, out var list) && list.ValueKind == JsonValueKind.Array)
                foreach (var item in list.EnumerateArray()) if (HasType(item, type)) return true;
        return false;
    }

    private static List<(string Content, int Id, bool Special)> ReadAddedTokens(string path, JsonElement root)
    {
        var list = new List<(string, int, bool)>();
        var arr = JsonFiles.Get(root, "added_tokens");
        if (arr is null) return list;
        if (arr.Value.ValueKind != JsonValueKind.Array) throw JsonFiles.Bad(path, "added_tokens", "must be an array");
        int i = 0;
        foreach (var t in arr.Value.EnumerateArray())
        {
            string f = $"added_tokens[{i++}]";
            var idEl = JsonFiles.Get(t, "id") ?? throw JsonFiles.Bad(path, f + ".id", "is missing");
            int id = JsonFiles.GetInt(path, idEl, f + ".id");
            string content = JsonFiles.GetString(path, t, "content", f + ".content") ?? throw JsonFiles.Bad(path, f + ".content", "is missing");
            bool special = JsonFiles.GetBool(path, t, "special", f + ".special") ?? false;
            list.Add((content, id, special));
        }
        return list;
    }

    private static Dictionary<string, int> ReadVocab(string path, JsonElement container, string field)
    {
        var v = container.ValueKind == JsonValueKind.Object && field.Contains('.')
            ? JsonFiles.Get(container, field[(field.LastIndexOf('.') + 1)..])
            : container;
        if (v is null) throw JsonFiles.Bad(path, field, "is missing");
        if (v.Value.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(path, field, $"must be an object mapping tokens to ids but is {v.Value.ValueKind}");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in v.Value.EnumerateObject())
            vocab[p.Name] = JsonFiles.GetInt(path, p.Value, $"{field}[\"{p.Name}\"]");
        return vocab;
    }

    private static List<string> ReadMerges(string path, JsonElement model)
    {
        var merges = new List<string>();
        var m = JsonFiles.Get(model, "merges");
        if (m is null) return merges;
        if (m.Value.ValueKind != JsonValueKind.Array) throw JsonFiles.Bad(path, "model.merges", "must be an array");
        int i = 0;
        foreach (var e in m.Value.EnumerateArray())
        {
            string f = $"model.merges[{i++}]";
            if (e.ValueKind == JsonValueKind.String)
            {
                string s = e.GetString()!;
                if (s.Split(' ').Length != 2) throw JsonFiles.Bad(path, f, $"must be two tokens separated by one space but is '{s}'");
                merges.Add(s);
            }
            else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2
                     && e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String)
            {
                string a = e[0].GetString()!, b = e[1].GetString()!;
                if (a.Contains(' ') || b.Contains(' '))
                    throw new NotSupportedException($"Tokenizer file '{path}': {f} has a token containing a space, which Microsoft.ML.Tokenizers' merge format cannot represent.");
                merges.Add(a + " " + b);
            }
            else throw JsonFiles.Bad(path, f, "must be a string \"a b\" or an array [\"a\", \"b\"]");
        }
        return merges;
    }

    private static Normalizer? ReadNormalizer(string path, JsonElement? n, string field = "normalizer")
    {
        if (n is null) return null;
        string? type = JsonFiles.GetString(path, n.Value, "type", field + ".type");
        switch (type)
        {
            case "NFC": return SimpleNormalizer.Form(NormalizationForm.FormC);
            case "NFD": return SimpleNormalizer.Form(NormalizationForm.FormD);
            case "NFKC": return SimpleNormalizer.Form(NormalizationForm.FormKC);
            case "NFKD": return SimpleNormalizer.Form(NormalizationForm.FormKD);
            case "Lowercase": return SimpleNormalizer.Lowercase();
            case "Sequence":
            {
                var steps = new List<SimpleNormalizer>();
                var list = JsonFiles.Get(n.Value, "normalizers");
                if (list is { ValueKind: JsonValueKind.Array })
                {
                    int i = 0;
                    foreach (var e in list.Value.EnumerateArray())
                        if (ReadNormalizer(path, e, $"{field}.normalizers[{i++}]") is SimpleNormalizer s) steps.Add(s);
                }
                return steps.Count == 0 ? null : SimpleNormalizer.Sequence(steps);
            }
            default:
                throw new NotSupportedException($"Tokenizer file '{path}': normalizer type '{type}' ({field}.type) is not supported.");
        }
    }

    private static (string? Regex, bool ByteLevel) ReadPreTokenizer(string path, JsonElement? p, string field)
    {
        if (p is null) return (null, false);
        string? type = JsonFiles.GetString(path, p.Value, "type", field + ".type");
        switch (type)
        {
            case "ByteLevel":
                return (JsonFiles.GetBool(path, p.Value, "use_regex", field + ".use_regex") == false ? null : ByteLevelEncoding.Gpt2Pattern, true);
            case "Whitespace": return (WhitespacePattern, false);
            case "WhitespaceSplit": return (WhitespaceSplitPattern, false);
            case "Split":
            {
                var pattern = JsonFiles.Get(p.Value, "pattern") ?? throw JsonFiles.Bad(path, field + ".pattern", "is missing");
                string? rx = JsonFiles.GetString(path, pattern, "Regex", field + ".pattern.Regex");
                string? str = JsonFiles.GetString(path, pattern, "String", field + ".pattern.String");
                string behavior = JsonFiles.GetString(path, p.Value, "behavior", field + ".behavior") ?? "Isolated";
                if (rx is null || behavior != "Isolated" || JsonFiles.GetBool(path, p.Value, "invert", field + ".invert") == true)
                    throw new NotSupportedException($"Tokenizer file '{path}': only Split pre-tokenizers with an isolated Regex pattern are supported ({field}, string '{str}', behavior '{behavior}').");
                return (rx, false);
            }
            case "Sequence":
            {
                string? regex = null;
                bool byteLevel = false;
                var list = JsonFiles.Get(p.Value, "pretokenizers");
                if (list is { ValueKind: JsonValueKind.Array })
                {
                    int i = 0;
                    foreach (var e in list.Value.EnumerateArray())
                    {
                        var (r, b) = ReadPreTokenizer(path, e, $"{field}.pretokenizers[{i++}]");
                        byteLevel |= b;
                        if (r is null) continue;
                        if (regex is not null)
                        {
                            if (b) continue; // ByteLevel after a Split: its own regex is off in practice; keep the Split's.
                            throw new NotSupportedException($"Tokenizer file '{path}': {field} chains several splitting pre-tokenizers, which is not supported.");
                        }
                        regex = r;
                    }
                }
                return (regex, byteLevel);
            }
            default:
                throw new NotSupportedException($"Tokenizer file '{path}': pre-tokenizer type '{type}' ({field}.type) is not supported.");
        }
    }

    private static (bool? AddBos, string? BosToken) ReadPostProcessorBos(JsonElement root)
    {
        var pp = JsonFiles.Get(root, "post_processor");
        if (pp is null) return (null, null);
        return FindTemplate(pp.Value);

        static (bool?, string?) FindTemplate(JsonElement e)
        {
            if (e.ValueKind != JsonValueKind.Object) return (null, null);
            if (e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == "TemplateProcessing"
                && e.TryGetProperty("single", out var single) && single.ValueKind == JsonValueKind.Array)
            {
                foreach (var item in single.EnumerateArray())
                {
                    if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("SpecialToken", out var st)
                        && st.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String)
                        return (true, id.GetString());
                    return (false, null);
                }
                return (false, null);
            }
            if (e.TryGetProperty("processors", out var list) && list.ValueKind == JsonValueKind.Array)
                foreach (var p in list.EnumerateArray())
                {
                    var r = FindTemplate(p);
                    if (r.Item1 is not null) return r;
                }
            return (null, null);
        }
    }

    // ---------------- vocab.json + merges.txt ----------------

    public static LoadedTokenizer LoadVocabMerges(string vocabPath, string mergesPath, IReadOnlyDictionary<string, int> extraSpecials)
    {
        Dictionary<string, int> vocab;
        using (var doc = JsonFiles.Load(vocabPath))
            vocab = ReadVocab(vocabPath, doc.RootElement, "$");
        var merges = new List<string>();
        int lineNo = 0;
        foreach (var raw in File.ReadLines(mergesPath))
        {
            lineNo++;
            string line = raw.TrimEnd('\r', '\n');
            if (line.Length == 0 || (lineNo == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            if (line.Split(' ').Length != 2)
                throw new InvalidDataException($"Invalid merges file '{mergesPath}': line {lineNo} must be two tokens separated by one space but is '{line}'.");
            merges.Add(line);
        }
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var kv in extraSpecials) specials[kv.Key] = kv.Value;
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            SpecialTokens = specials.Count > 0 ? specials : null,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(ByteLevelEncoding.CreateGpt2Regex(), specials.Count > 0 ? specials : null),
        };
        return new LoadedTokenizer(BpeTokenizer.Create(options), vocab, specials, vocabPath);
    }

    // ---------------- tokenizer.model ----------------

    public static LoadedTokenizer LoadSentencePiece(string modelPath, IReadOnlyDictionary<string, int> extraSpecials)
    {
        SentencePieceTokenizer tok;
        try
        {
            using var stream = File.OpenRead(modelPath);
            tok = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false,
                specialTokens: extraSpecials.Count > 0 ? extraSpecials : null);
        }
        catch (Exception ex) when (ex is not IOException and not UnauthorizedAccessException)
        {
            throw new InvalidDataException($"Could not read SentencePiece model '{modelPath}': {ex.Message}", ex);
        }
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var kv in extraSpecials) specials[kv.Key] = kv.Value;
        return new LoadedTokenizer(tok, tok.Vocabulary, specials, modelPath);
    }
}
