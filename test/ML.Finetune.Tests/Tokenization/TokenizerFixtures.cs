using System.Collections.Concurrent;
using System.IO.Compression;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ML.Finetune.Tests.Tokenization;

/// <summary>One corpus string with HF's results (tools/tokenizer-reference/generate.mjs).</summary>
internal sealed record TokenizerCase(string Text, int[] Ids, int[] IdsSpecial, int[] IdsSplit, int[][] Offsets, string Decoded, string DecodedSkip);

internal sealed record TokenizerFamilyReference(string[] Specials, TokenizerCase[] Cases);

/// <summary>Fuzz strings (shared by all families) and, per family, HF's ids and decoded text (null: equal to the string).</summary>
internal sealed record TokenizerFuzzFamily(int[][] Ids, string?[] Decoded);

/// <summary>
/// The real tokenizer folders of Fixtures/tokenizers, unpacked once per process into a temp folder (the .gz files
/// decompressed), with the derived families rebuilt: llama3.1 (Llama 3's tokenizer.json with Llama 3.1's
/// post_processor), llama2-metaspace (Mistral-style Metaspace pre-tokenizer), llama2-added (added-token flags).
/// </summary>
internal static class TokenizerFixtures
{
    public static readonly string[] Families = { "gpt2", "llama3", "llama3.1", "qwen3", "llama2", "llama2-metaspace", "llama2-added" };
    public static string Root { get; set; } = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers");

    private static readonly JsonSerializerOptions s_json = new() { PropertyNameCaseInsensitive = true };
    private static readonly ConcurrentDictionary<string, Lazy<string>> s_folders = new();
    private static readonly Lazy<string> s_temp = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), $"mlft-tokenizers-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(dir, true); } catch (IOException) { } };
        return dir;
    });
    private static readonly Lazy<Dictionary<string, TokenizerFamilyReference>> s_corpus = new(() =>
        ReadGz<CorpusFile>(Path.Combine(Root, "reference", "corpus.json.gz")).Families);
    private static readonly Lazy<FuzzFile> s_fuzz = new(() => ReadGz<FuzzFile>(Path.Combine(Root, "reference", "fuzz.json.gz")));

    private sealed record CorpusFile(Dictionary<string, TokenizerFamilyReference> Families);
    private sealed record FuzzFile(string[] Strings, Dictionary<string, TokenizerFuzzFamily> Families);

    public static TokenizerFamilyReference Corpus(string family) => s_corpus.Value[family];
    public static string[] FuzzStrings => s_fuzz.Value.Strings;
    public static TokenizerFuzzFamily Fuzz(string family) => s_fuzz.Value.Families[family];

    /// <summary>A folder holding the family's files as the hub ships them.</summary>
    public static string Folder(string family) => s_folders.GetOrAdd(family, f => new Lazy<string>(() => Materialize(f))).Value;

    private static T ReadGz<T>(string path)
    {
        using var gz = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
        return JsonSerializer.Deserialize<T>(gz, s_json)!;
    }

    private static string Materialize(string family)
    {
        string baseFamily = family switch { "llama3.1" => "llama3", "llama2-metaspace" or "llama2-added" => "llama2", _ => family };
        string dir = Path.Combine(s_temp.Value, family);
        Directory.CreateDirectory(dir);
        CopyFiles(Path.Combine(Root, baseFamily), dir);
        if (family == baseFamily) return dir;
        string own = Path.Combine(Root, family);
        CopyFiles(own, dir, f => f.StartsWith("tokenizer_config", StringComparison.Ordinal));
        string tj = Path.Combine(dir, "tokenizer.json");
        switch (family)
        {
            case "llama3.1":
                EditTokenizerJson(tj, new() { ["post_processor"] = JsonNode.Parse(File.ReadAllText(Path.Combine(own, "post_processor.json"))) });
                break;
            case "llama2-metaspace":
                EditTokenizerJson(tj, JsonNode.Parse(File.ReadAllText(Path.Combine(own, "edit.json")))!.AsObject()
                    .ToDictionary(kv => kv.Key, kv => kv.Value?.DeepClone()));
                break;
            case "llama2-added":
                EditTokenizerJson(tj, new(), JsonNode.Parse(File.ReadAllText(Path.Combine(own, "added.json")))!.AsArray());
                break;
        }
        return dir;
    }

    /// <summary>
    /// Rewrites a tokenizer.json with some top-level fields replaced and tokens appended to added_tokens, streaming
    /// (JsonDocument in, Utf8JsonWriter out): a 10 MB file in a fraction of a second.
    /// </summary>
    public static void EditTokenizerJson(string path, Dictionary<string, JsonNode?> replace, JsonArray? appendAddedTokens = null)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                w.WritePropertyName(p.Name);
                if (replace.TryGetValue(p.Name, out var node)) { if (node is null) w.WriteNullValue(); else node.WriteTo(w); }
                else if (p.Name == "added_tokens" && appendAddedTokens is not null)
                {
                    w.WriteStartArray();
                    foreach (var t in p.Value.EnumerateArray()) t.WriteTo(w);
                    foreach (var t in appendAddedTokens) t!.WriteTo(w);
                    w.WriteEndArray();
                }
                else p.Value.WriteTo(w);
            }
            w.WriteEndObject();
        }
        File.WriteAllBytes(path, stream.ToArray());
    }

    private static void CopyFiles(string from, string to, Func<string, bool>? include = null)
    {
        foreach (var file in Directory.GetFiles(from))
        {
            string name = Path.GetFileName(file);
            if (include is not null && !include(name)) continue;
            if (name.EndsWith(".gz", StringComparison.Ordinal))
            {
                using var gz = new GZipStream(File.OpenRead(file), CompressionMode.Decompress);
                using var outFile = File.Create(Path.Combine(to, name[..^3]));
                gz.CopyTo(outFile);
            }
            else File.Copy(file, Path.Combine(to, name), overwrite: true);
        }
    }
}
