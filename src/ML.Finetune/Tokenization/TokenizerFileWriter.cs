using System.Text.Encodings.Web;
using System.Text.Json;

namespace ML.Finetune.Tokenization;

/// <summary>Writes tokenizer folders in HF formats, so a project can ship its own small model.</summary>
public static class TokenizerFileWriter
{
    private static readonly JsonWriterOptions s_options = new() { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>
    /// Writes <c>tokenizer.json</c> (WordLevel model, WhitespaceSplit pre-tokenizer, special tokens as added tokens) and
    /// <c>tokenizer_config.json</c> into <paramref name="folder"/> (created if needed). Ids are positions in
    /// <paramref name="vocab"/>; special tokens that are not in it are appended after it in the order unk, bos, eos, pad, additional.
    /// </summary>
    public static void WriteWordLevelTokenizerJson(string folder, IReadOnlyList<string> vocab, string unkToken,
        string? bosToken = null, string? eosToken = null, string? padToken = null,
        IEnumerable<string>? additionalSpecialTokens = null, bool addBosToken = false)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(vocab);
        ArgumentException.ThrowIfNullOrEmpty(unkToken);
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        var ordered = new List<string>();
        foreach (var w in vocab)
        {
            if (string.IsNullOrEmpty(w)) throw new ArgumentException("Vocabulary entries must be non-empty.", nameof(vocab));
            if (!ids.TryAdd(w, ordered.Count)) throw new ArgumentException($"Duplicate vocabulary entry '{w}'.", nameof(vocab));
            ordered.Add(w);
        }
        var specials = new List<string> { unkToken };
        foreach (var s in new[] { bosToken, eosToken, padToken }.Concat(additionalSpecialTokens ?? Array.Empty<string>()))
            if (!string.IsNullOrEmpty(s) && !specials.Contains(s)) specials.Add(s);
        foreach (var s in specials)
            if (ids.TryAdd(s, ordered.Count)) ordered.Add(s);

        Directory.CreateDirectory(folder);
        using (var stream = File.Create(Path.Combine(folder, "tokenizer.json")))
        using (var w = new Utf8JsonWriter(stream, s_options))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            foreach (var s in specials.OrderBy(s => ids[s]))
            {
                w.WriteStartObject();
                w.WriteNumber("id", ids[s]);
                w.WriteString("content", s);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");
            w.WriteStartObject("pre_tokenizer");
            w.WriteString("type", "WhitespaceSplit");
            w.WriteEndObject();
            w.WriteNull("post_processor");
            w.WriteNull("decoder");
            w.WriteStartObject("model");
            w.WriteString("type", "WordLevel");
            w.WriteStartObject("vocab");
            for (int i = 0; i < ordered.Count; i++) w.WriteNumber(ordered[i], i);
            w.WriteEndObject();
            w.WriteString("unk_token", unkToken);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        WriteTokenizerConfig(folder, unkToken, bosToken, eosToken, padToken, addBosToken, specials.Select(s => (s, ids[s])));
    }

    /// <summary>
    /// Writes <c>vocab.json</c> and <c>merges.txt</c> (with the <c>#version: 0.2</c> header) for a byte-level BPE.
    /// Tokens must already be in the GPT-2 byte-level alphabet (see <see cref="ByteLevelEncoding"/>).
    /// </summary>
    public static void WriteByteLevelBpeFiles(string folder, IReadOnlyDictionary<string, int> vocab, IEnumerable<(string Left, string Right)> merges)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(vocab);
        ArgumentNullException.ThrowIfNull(merges);
        Directory.CreateDirectory(folder);
        using (var stream = File.Create(Path.Combine(folder, "vocab.json")))
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            foreach (var kv in vocab.OrderBy(kv => kv.Value)) w.WriteNumber(kv.Key, kv.Value);
            w.WriteEndObject();
        }
        using var writer = new StreamWriter(Path.Combine(folder, "merges.txt"), false, new System.Text.UTF8Encoding(false));
        writer.NewLine = "\n";
        writer.WriteLine("#version: 0.2");
        foreach (var (l, r) in merges)
        {
            if (string.IsNullOrEmpty(l) || string.IsNullOrEmpty(r) || l.Contains(' ') || r.Contains(' '))
                throw new ArgumentException($"Merge ('{l}', '{r}') must be two non-empty tokens without spaces.", nameof(merges));
            writer.WriteLine(l + " " + r);
        }
    }

    private static void WriteTokenizerConfig(string folder, string unk, string? bos, string? eos, string? pad, bool addBos,
        IEnumerable<(string Token, int Id)> added)
    {
        using var stream = File.Create(Path.Combine(folder, "tokenizer_config.json"));
        using var w = new Utf8JsonWriter(stream, s_options);
        w.WriteStartObject();
        w.WriteString("tokenizer_class", "PreTrainedTokenizerFast");
        w.WriteBoolean("add_bos_token", addBos);
        w.WriteBoolean("add_eos_token", false);
        w.WriteString("unk_token", unk);
        if (bos is not null) w.WriteString("bos_token", bos);
        if (eos is not null) w.WriteString("eos_token", eos);
        if (pad is not null) w.WriteString("pad_token", pad);
        w.WriteStartObject("added_tokens_decoder");
        foreach (var (t, id) in added.OrderBy(a => a.Id))
        {
            w.WriteStartObject(id.ToString(System.Globalization.CultureInfo.InvariantCulture));
            w.WriteString("content", t);
            w.WriteBoolean("lstrip", false);
            w.WriteBoolean("normalized", false);
            w.WriteBoolean("rstrip", false);
            w.WriteBoolean("single_word", false);
            w.WriteBoolean("special", true);
            w.WriteEndObject();
        }
        w.WriteEndObject();
        w.WriteEndObject();
    }
}
