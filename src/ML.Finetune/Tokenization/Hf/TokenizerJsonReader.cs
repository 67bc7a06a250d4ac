using System.Text;
using System.Text.Json;

namespace ML.Finetune.Tokenization;

/// <summary>
/// Reads a HF tokenizer.json into an <see cref="HfTokenizer"/>. Every field of every component is read; a component
/// type, field or value that is not implemented is refused with a <see cref="NotSupportedException"/> naming the file
/// and field, so nothing is silently ignored. Malformed values raise <see cref="InvalidDataException"/>.
/// </summary>
internal sealed class TokenizerJsonReader
{
    private readonly string _path;

    private TokenizerJsonReader(string path) => _path = path;

    public static HfTokenizer Read(string path)
    {
        using var doc = JsonFiles.Load(path);
        return new TokenizerJsonReader(path).Read(doc.RootElement);
    }

    private NotSupportedException Unsupported(string field, string what) =>
        new($"Tokenizer file '{_path}': {field} {what} is not supported.");

    /// <summary>Refuses any field of <paramref name="e"/> not in <paramref name="known"/>.</summary>
    private void Fields(JsonElement e, string field, params string[] known)
    {
        if (e.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(_path, field, $"must be an object but is {e.ValueKind}");
        foreach (var p in e.EnumerateObject())
            if (Array.IndexOf(known, p.Name) < 0)
                throw Unsupported($"{field}.{p.Name}", "(a field this library does not implement)");
    }

    private string Type(JsonElement e, string field) =>
        JsonFiles.GetString(_path, e, "type", field + ".type") ?? throw JsonFiles.Bad(_path, field + ".type", "is missing");

    private bool Bool(JsonElement e, string name, string field, bool fallback) => JsonFiles.GetBool(_path, e, name, $"{field}.{name}") ?? fallback;
    private string? Str(JsonElement e, string name, string field) => JsonFiles.GetString(_path, e, name, $"{field}.{name}");

    private HfTokenizer Read(JsonElement root)
    {
        Fields(root, "$", "version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "model");
        if (JsonFiles.Get(root, "truncation") is not null) throw Unsupported("truncation", "(non-null: ML.Finetune truncates examples itself)");
        if (JsonFiles.Get(root, "padding") is not null) throw Unsupported("padding", "(non-null: ML.Finetune pads batches itself)");
        var model = JsonFiles.Get(root, "model") ?? throw JsonFiles.Bad(_path, "model", "is missing");
        var normalizer = JsonFiles.Get(root, "normalizer") is { } n ? Normalizer(n, "normalizer") : null;
        var (hfModel, type) = Model(model);
        var added = HfTokenizer.AddTokens(Array.Empty<AddedToken>(), AddedTokens(root), hfModel);
        return new HfTokenizer(hfModel, normalizer,
            JsonFiles.Get(root, "pre_tokenizer") is { } p ? PreTokenizer(p, "pre_tokenizer") : null,
            JsonFiles.Get(root, "post_processor") is { } pp ? PostProcessor(pp, "post_processor", hfModel, added) : Tokenization.PostProcessor.None,
            JsonFiles.Get(root, "decoder") is { } d ? Decoder(d, "decoder") : null,
            added, type);
    }

    private List<AddedToken> AddedTokens(JsonElement root)
    {
        var list = new List<AddedToken>();
        if (JsonFiles.Get(root, "added_tokens") is not { } arr) return list;
        if (arr.ValueKind != JsonValueKind.Array) throw JsonFiles.Bad(_path, "added_tokens", "must be an array");
        int i = 0;
        foreach (var t in arr.EnumerateArray())
        {
            string f = $"added_tokens[{i++}]";
            Fields(t, f, "id", "content", "single_word", "lstrip", "rstrip", "normalized", "special");
            int id = JsonFiles.GetInt(_path, JsonFiles.Get(t, "id") ?? throw JsonFiles.Bad(_path, f + ".id", "is missing"), f + ".id");
            string content = Str(t, "content", f) ?? throw JsonFiles.Bad(_path, f + ".content", "is missing");
            bool special = Bool(t, "special", f, false);
            list.Add(new AddedToken(id, content, special, Bool(t, "single_word", f, false), Bool(t, "lstrip", f, false),
                Bool(t, "rstrip", f, false), JsonFiles.GetBool(_path, t, "normalized", f + ".normalized")));
        }
        return list;
    }

    // ---------------- model ----------------

    private (HfModel, string) Model(JsonElement m)
    {
        if (m.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(_path, "model", "must be an object");
        string? type = Str(m, "type", "model") ?? (JsonFiles.Get(m, "merges") is not null ? "BPE" : null)
            ?? throw JsonFiles.Bad(_path, "model.type", "is missing");
        switch (type)
        {
            case "BPE":
            {
                Fields(m, "model", "type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges");
                if (JsonFiles.Get(m, "dropout") is { } dr && (dr.ValueKind != JsonValueKind.Number || dr.GetDouble() != 0))
                    throw Unsupported("model.dropout", $"{dr} (BPE dropout makes encoding random)");
                var vocab = Vocab(m);
                var merges = Merges(m);
                var options = new BpeOptionsHf(Str(m, "unk_token", "model"), Bool(m, "fuse_unk", "model", false), Bool(m, "byte_fallback", "model", false),
                    Bool(m, "ignore_merges", "model", false), Str(m, "continuing_subword_prefix", "model"), Str(m, "end_of_word_suffix", "model"));
                try { return (new BpeModel(vocab, merges, options, i => $"model.merges[{i}]"), type); }
                catch (InvalidDataException ex) { throw new InvalidDataException($"Invalid tokenizer file '{_path}': {ex.Message}", ex); }
            }
            case "WordLevel":
            {
                Fields(m, "model", "type", "vocab", "unk_token");
                var vocab = Vocab(m);
                string unk = Str(m, "unk_token", "model") ?? throw JsonFiles.Bad(_path, "model.unk_token", "is missing (WordLevel needs an unknown token)");
                if (!vocab.TryGetValue(unk, out int unkId)) throw JsonFiles.Bad(_path, "model.unk_token", $"names '{unk}', which is not in model.vocab");
                return (new WordLevelModel(vocab, unkId), type);
            }
            default:
                throw Unsupported("model.type", $"'{type}' (supported: BPE, WordLevel)");
        }
    }

    private Dictionary<string, int> Vocab(JsonElement m)
    {
        var v = JsonFiles.Get(m, "vocab") ?? throw JsonFiles.Bad(_path, "model.vocab", "is missing");
        if (v.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(_path, "model.vocab", $"must be an object mapping tokens to ids but is {v.ValueKind}");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in v.EnumerateObject()) vocab[p.Name] = JsonFiles.GetInt(_path, p.Value, $"model.vocab[\"{p.Name}\"]");
        return vocab;
    }

    private List<(string, string)> Merges(JsonElement m)
    {
        var merges = new List<(string, string)>();
        if (JsonFiles.Get(m, "merges") is not { } arr) return merges;
        if (arr.ValueKind != JsonValueKind.Array) throw JsonFiles.Bad(_path, "model.merges", "must be an array");
        int i = 0;
        foreach (var e in arr.EnumerateArray())
        {
            string f = $"model.merges[{i++}]";
            if (e.ValueKind == JsonValueKind.String)
            {
                string s = e.GetString()!;
                if (s.StartsWith("#version", StringComparison.Ordinal)) { i--; continue; }
                var parts = s.Split(' ');
                if (parts.Length != 2) throw JsonFiles.Bad(_path, f, $"must be two tokens separated by one space but is '{s}'");
                merges.Add((parts[0], parts[1]));
            }
            else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2 && e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String)
                merges.Add((e[0].GetString()!, e[1].GetString()!));
            else throw JsonFiles.Bad(_path, f, "must be a string \"a b\" or an array [\"a\", \"b\"]");
        }
        return merges;
    }

    // ---------------- normalizer ----------------

    private HfNormalizer Normalizer(JsonElement n, string f)
    {
        string type = Type(n, f);
        switch (type)
        {
            case "NFC": Fields(n, f, "type"); return new UnicodeFormNormalizer(NormalizationForm.FormC);
            case "NFD": Fields(n, f, "type"); return new UnicodeFormNormalizer(NormalizationForm.FormD);
            case "NFKC": Fields(n, f, "type"); return new UnicodeFormNormalizer(NormalizationForm.FormKC);
            case "NFKD": Fields(n, f, "type"); return new UnicodeFormNormalizer(NormalizationForm.FormKD);
            case "Lowercase": Fields(n, f, "type"); return new LowercaseNormalizer();
            case "Prepend":
                Fields(n, f, "type", "prepend");
                return new PrependNormalizer(Str(n, "prepend", f) ?? throw JsonFiles.Bad(_path, f + ".prepend", "is missing"));
            case "Replace":
                Fields(n, f, "type", "pattern", "content");
                return Replace(n, f);
            case "Strip":
                Fields(n, f, "type", "strip_left", "strip_right");
                return new StripNormalizer(Bool(n, "strip_left", f, true), Bool(n, "strip_right", f, true));
            case "Sequence":
                Fields(n, f, "type", "normalizers");
                return new SequenceNormalizer(List(n, "normalizers", f, Normalizer));
            default:
                throw Unsupported(f + ".type", $"'{type}' (supported: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, Sequence)");
        }
    }

    private ReplaceNormalizer Replace(JsonElement n, string f) =>
        new(Pattern(JsonFiles.Get(n, "pattern") ?? throw JsonFiles.Bad(_path, f + ".pattern", "is missing"), f + ".pattern"),
            Str(n, "content", f) ?? throw JsonFiles.Bad(_path, f + ".content", "is missing"));

    private TextPattern Pattern(JsonElement p, string f)
    {
        Fields(p, f, "String", "Regex");
        if (Str(p, "String", f) is { } s) return TextPattern.ForString(s);
        if (Str(p, "Regex", f) is { } r) return TextPattern.ForRegex(r, $"Tokenizer file '{_path}': {f}.Regex");
        throw JsonFiles.Bad(_path, f, "must have a String or a Regex");
    }

    private List<T> List<T>(JsonElement e, string name, string f, Func<JsonElement, string, T> read)
    {
        var arr = JsonFiles.Get(e, name) ?? throw JsonFiles.Bad(_path, $"{f}.{name}", "is missing");
        if (arr.ValueKind != JsonValueKind.Array) throw JsonFiles.Bad(_path, $"{f}.{name}", "must be an array");
        var list = new List<T>();
        int i = 0;
        foreach (var item in arr.EnumerateArray()) list.Add(read(item, $"{f}.{name}[{i++}]"));
        return list;
    }

    // ---------------- pre-tokenizer ----------------

    private HfPreTokenizer PreTokenizer(JsonElement p, string f)
    {
        string type = Type(p, f);
        switch (type)
        {
            case "ByteLevel":
                Fields(p, f, "type", "add_prefix_space", "trim_offsets", "use_regex");
                return new ByteLevelPreTokenizer(Bool(p, "add_prefix_space", f, true), Bool(p, "use_regex", f, true));
            case "Split":
            {
                Fields(p, f, "type", "pattern", "behavior", "invert");
                var pattern = Pattern(JsonFiles.Get(p, "pattern") ?? throw JsonFiles.Bad(_path, f + ".pattern", "is missing"), f + ".pattern");
                string behavior = Str(p, "behavior", f) ?? throw JsonFiles.Bad(_path, f + ".behavior", "is missing");
                if (!Enum.TryParse<SplitBehavior>(behavior, out var b))
                    throw Unsupported(f + ".behavior", $"'{behavior}' (supported: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
                return new SplitPreTokenizer(pattern, b, Bool(p, "invert", f, false));
            }
            case "Metaspace":
            {
                Fields(p, f, "type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep");
                return new MetaspacePreTokenizer(Replacement(p, f), PrependScheme(p, f), Bool(p, "split", f, true));
            }
            case "Whitespace": Fields(p, f, "type"); return CharClassPreTokenizer.Whitespace();
            case "WhitespaceSplit": Fields(p, f, "type"); return CharClassPreTokenizer.WhitespaceSplit();
            case "Digits":
                Fields(p, f, "type", "individual_digits");
                return CharClassPreTokenizer.Digits(Bool(p, "individual_digits", f, false));
            case "Sequence":
                Fields(p, f, "type", "pretokenizers");
                return new SequencePreTokenizer(List(p, "pretokenizers", f, PreTokenizer));
            default:
                throw Unsupported(f + ".type", $"'{type}' (supported: ByteLevel, Split, Metaspace, Whitespace, WhitespaceSplit, Digits, Sequence)");
        }
    }

    private char Replacement(JsonElement p, string f)
    {
        string r = Str(p, "replacement", f) ?? "\u2581";
        if (r.Length != 1) throw Unsupported(f + ".replacement", $"'{r}' (must be one UTF-16 char)");
        if (Str(p, "str_rep", f) is { } rep && rep != r) throw Unsupported(f + ".str_rep", $"'{rep}' different from replacement '{r}'");
        return r[0];
    }

    /// <summary>prepend_scheme, or the older add_prefix_space (true: always, false: never).</summary>
    private MetaspacePreTokenizer.Prepend PrependScheme(JsonElement p, string f) => Str(p, "prepend_scheme", f) switch
    {
        "always" => MetaspacePreTokenizer.Prepend.Always,
        "never" => MetaspacePreTokenizer.Prepend.Never,
        "first" => MetaspacePreTokenizer.Prepend.First,
        null => Bool(p, "add_prefix_space", f, true) ? MetaspacePreTokenizer.Prepend.Always : MetaspacePreTokenizer.Prepend.Never,
        var s => throw Unsupported(f + ".prepend_scheme", $"'{s}' (supported: always, never, first)"),
    };

    // ---------------- post-processor ----------------

    private PostProcessor PostProcessor(JsonElement p, string f, HfModel model, IReadOnlyList<AddedToken> added)
    {
        string type = Type(p, f);
        switch (type)
        {
            case "ByteLevel":
                Fields(p, f, "type", "add_prefix_space", "trim_offsets", "use_regex");
                return new PostProcessor(Array.Empty<int>(), Array.Empty<int>(), Bool(p, "trim_offsets", f, true), Bool(p, "add_prefix_space", f, true));
            case "TemplateProcessing":
                Fields(p, f, "type", "single", "pair", "special_tokens");
                return Template(p, f);
            case "RobertaProcessing":
            case "BertProcessing":
            {
                // Single sequence: cls $A sep.
                if (type == "RobertaProcessing") Fields(p, f, "type", "sep", "cls", "trim_offsets", "add_prefix_space");
                else Fields(p, f, "type", "sep", "cls");
                int cls = PairId(p, "cls", f), sep = PairId(p, "sep", f);
                return new PostProcessor(new[] { cls }, new[] { sep },
                    type == "RobertaProcessing" && Bool(p, "trim_offsets", f, true), Bool(p, "add_prefix_space", f, true));
            }
            case "Sequence":
                Fields(p, f, "type", "processors");
                return List(p, "processors", f, (e, ff) => PostProcessor(e, ff, model, added))
                    .Aggregate(Tokenization.PostProcessor.None, (acc, next) => acc.Then(next));
            default:
                throw Unsupported(f + ".type", $"'{type}' (supported: TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence)");
        }
    }

    private int PairId(JsonElement p, string name, string f)
    {
        var e = JsonFiles.Get(p, name) ?? throw JsonFiles.Bad(_path, $"{f}.{name}", "is missing");
        if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() != 2) throw JsonFiles.Bad(_path, $"{f}.{name}", "must be [token, id]");
        return JsonFiles.GetInt(_path, e[1], $"{f}.{name}[1]");
    }

    /// <summary>TemplateProcessing's single template: the special tokens' ids before and after "$A".</summary>
    private PostProcessor Template(JsonElement p, string f)
    {
        var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
        if (JsonFiles.Get(p, "special_tokens") is { } st)
        {
            if (st.ValueKind != JsonValueKind.Object) throw JsonFiles.Bad(_path, f + ".special_tokens", "must be an object");
            foreach (var kv in st.EnumerateObject())
            {
                string sf = $"{f}.special_tokens[\"{kv.Name}\"]";
                Fields(kv.Value, sf, "id", "ids", "tokens");
                var ids = JsonFiles.Get(kv.Value, "ids") ?? throw JsonFiles.Bad(_path, sf + ".ids", "is missing");
                if (ids.ValueKind != JsonValueKind.Array) throw JsonFiles.Bad(_path, sf + ".ids", "must be an array");
                specials[kv.Name] = ids.EnumerateArray().Select((x, k) => JsonFiles.GetInt(_path, x, $"{sf}.ids[{k}]")).ToArray();
            }
        }
        var single = JsonFiles.Get(p, "single") ?? throw JsonFiles.Bad(_path, f + ".single", "is missing");
        if (single.ValueKind != JsonValueKind.Array) throw JsonFiles.Bad(_path, f + ".single", "must be an array");
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenA = false;
        int i = 0;
        foreach (var item in single.EnumerateArray())
        {
            string itf = $"{f}.single[{i++}]";
            Fields(item, itf, "SpecialToken", "Sequence");
            if (JsonFiles.Get(item, "Sequence") is { } seq)
            {
                Fields(seq, itf + ".Sequence", "id", "type_id");
                string id = Str(seq, "id", itf + ".Sequence") ?? "A";
                if (id != "A" || seenA) throw Unsupported(itf + ".Sequence.id", $"'{id}' (a single template holds sequence A once)");
                seenA = true;
            }
            else if (JsonFiles.Get(item, "SpecialToken") is { } tok)
            {
                Fields(tok, itf + ".SpecialToken", "id", "type_id");
                string id = Str(tok, "id", itf + ".SpecialToken") ?? throw JsonFiles.Bad(_path, itf + ".SpecialToken.id", "is missing");
                if (!specials.TryGetValue(id, out var ids)) throw JsonFiles.Bad(_path, itf + ".SpecialToken.id", $"names '{id}', which is not in {f}.special_tokens");
                (seenA ? suffix : prefix).AddRange(ids);
            }
        }
        if (!seenA) throw JsonFiles.Bad(_path, f + ".single", "has no sequence $A");
        return new PostProcessor(prefix, suffix);
    }

    // ---------------- decoder ----------------

    private HfDecoder Decoder(JsonElement d, string f)
    {
        string type = Type(d, f);
        switch (type)
        {
            case "ByteLevel": Fields(d, f, "type", "add_prefix_space", "trim_offsets", "use_regex"); return new ByteLevelDecoder();
            case "ByteFallback": Fields(d, f, "type"); return new ByteFallbackDecoder();
            case "Fuse": Fields(d, f, "type"); return new FuseDecoder();
            case "Replace": Fields(d, f, "type", "pattern", "content"); return new ReplaceDecoder(Replace(d, f));
            case "Strip":
            {
                Fields(d, f, "type", "content", "start", "stop");
                string c = Str(d, "content", f) ?? " ";
                if (c.Length != 1) throw Unsupported(f + ".content", $"'{c}' (must be one char)");
                int Int(string name) => JsonFiles.Get(d, name) is { } v ? JsonFiles.GetInt(_path, v, $"{f}.{name}") : 0;
                return new StripDecoder(c[0], Int("start"), Int("stop"));
            }
            case "Metaspace":
                Fields(d, f, "type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep");
                return new MetaspaceDecoder(Replacement(d, f), PrependScheme(d, f) != MetaspacePreTokenizer.Prepend.Never);
            case "Sequence":
                Fields(d, f, "type", "decoders");
                return new SequenceDecoder(List(d, "decoders", f, Decoder));
            default:
                throw Unsupported(f + ".type", $"'{type}' (supported: ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace, Sequence)");
        }
    }
}
