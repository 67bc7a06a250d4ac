using System.Text.Json;
using System.Text.Json.Nodes;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using ML.Finetune.Runtime;

namespace ML.Finetune.Bench;

/// <summary>
/// The public configs of the real-shape benchmark models and a writer of random-weight Hugging Face folders for them:
/// bf16 safetensors, sharded with model.safetensors.index.json above <see cref="MaxShardBytes"/> as HF does.
/// The tensor names and shapes come from our own model built on the meta device, so they are exactly what the loader
/// expects. Values are deterministic per (seed, tensor name): finite bf16 of magnitude 2^-7..2^-3 with random sign
/// and mantissa (norm weights 1), generated straight as bit patterns (several GB/s), so the disk sets the pace.
/// </summary>
static class RealShapes
{
    public sealed record Shape(string Name, string Config, string? RopeScaling)
    {
        /// <summary>config.json as written: the public one, rope scaling left out unless asked for.</summary>
        public string ConfigJson(bool withRopeScaling)
        {
            var o = JsonNode.Parse(Config)!.AsObject();
            if (withRopeScaling && RopeScaling != null) o["rope_scaling"] = JsonNode.Parse(RopeScaling);
            return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        }
    }

    const string Llama3Rope = """{"factor": FACTOR, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}""";

    /// <summary>config.json of each model on the Hugging Face hub (architecture fields as published).</summary>
    public static readonly Shape[] All =
    [
        new("qwen2.5-0.5b", """
            {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
             "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
             "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
             "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
             "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true,
             "use_sliding_window": false, "vocab_size": 151936}
            """, null),
        new("llama-3.2-1b", """
            {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
             "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
             "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
             "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
             "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
             "use_cache": true, "vocab_size": 128256}
            """, Llama3Rope.Replace("FACTOR", "32.0")),
        new("llama-3.2-3b", """
            {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
             "eos_token_id": 128001, "head_dim": 128, "hidden_act": "silu", "hidden_size": 3072, "initializer_range": 0.02,
             "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
             "num_attention_heads": 24, "num_hidden_layers": 28, "num_key_value_heads": 8, "pretraining_tp": 1,
             "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
             "use_cache": true, "vocab_size": 128256}
            """, Llama3Rope.Replace("FACTOR", "32.0")),
        new("llama-3.1-8b", """
            {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
             "eos_token_id": 128001, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
             "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
             "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
             "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
             "use_cache": true, "vocab_size": 128256}
            """, Llama3Rope.Replace("FACTOR", "8.0")),
    ];

    public static Shape Find(string name) => All.FirstOrDefault(s => s.Name == name)
        ?? throw new ArgumentException($"unknown shape '{name}' (known: {string.Join(", ", All.Select(s => s.Name))})");

    /// <summary>Checkpoints above this are sharded, shards filled in parameter order up to it.</summary>
    public const long MaxShardBytes = 2L << 30;

    /// <summary>Marks a folder this writer made (and finished); only such folders are ever reused.</summary>
    const string Marker = ".mlft-bench-model.json";

    /// <summary>Parameter names and shapes in the HF layout, from our model built on the meta device.</summary>
    public static List<SafeTensorEntry> Entries(CausalLMConfig config)
    {
        using var model = MetaConstruction.Build(() => CausalLMFactory.Create(config));
        return model.named_parameters().Select(p => new SafeTensorEntry(p.name, "BF16", p.parameter.shape)).ToList();
    }

    /// <summary>
    /// Writes folder/&lt;shape&gt; unless this writer already finished it with the same spec. Never touches a folder it
    /// did not make: an existing folder without our marker (or with another spec) is an error.
    /// </summary>
    public static string Write(string root, Shape shape, long seed, bool withRopeScaling)
    {
        string dir = Path.Combine(root, shape.Name);
        string configJson = shape.ConfigJson(withRopeScaling);
        string spec = JsonSerializer.Serialize(new { shape = shape.Name, seed, config = configJson, format = 1 });
        string marker = Path.Combine(dir, Marker);
        if (Directory.Exists(dir))
        {
            if (File.Exists(marker) && File.ReadAllText(marker) == spec) { Console.WriteLine($"{dir}: already written (same spec), kept"); return dir; }
            if (Directory.EnumerateFileSystemEntries(dir).Any())
                throw new IOException($"{dir} exists and was not written by this command with this spec; choose another --models-dir or remove it yourself");
        }
        Directory.CreateDirectory(dir);
        var config = CausalLMConfig.Parse(shape.ConfigJson(false), Path.Combine(dir, "config.json"));
        var entries = Entries(config);
        long total = entries.Sum(e => e.ByteLength);
        var shards = new List<List<SafeTensorEntry>> { new() };
        long inShard = 0;
        foreach (var e in entries)
        {
            if (inShard > 0 && inShard + e.ByteLength > MaxShardBytes) { shards.Add([]); inShard = 0; }
            shards[^1].Add(e);
            inShard += e.ByteLength;
        }
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            string file = shards.Count == 1 ? CausalLMFactory.WeightsFile : $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            SafeTensors.Write(Path.Combine(dir, file), shards[i], (e, s) => RandomBf16.Write(s, e, seed), new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var e in shards[i]) weightMap[e.Name] = file;
            Console.WriteLine($"  {file}: {shards[i].Sum(e => e.ByteLength) / 1e9:F2} GB");
        }
        if (shards.Count > 1)
            File.WriteAllText(Path.Combine(dir, CausalLMFactory.IndexFile),
                JsonSerializer.Serialize(new { metadata = new { total_size = total }, weight_map = weightMap }, new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.Combine(dir, "config.json"), configJson);
        File.WriteAllText(marker, spec);
        Console.WriteLine($"{dir}: {entries.Count} tensors, {total / 1e9:F2} GB bf16 in {shards.Count} file(s), {sw.Elapsed.TotalSeconds:F1} s " +
                          $"({total / 1e9 / sw.Elapsed.TotalSeconds:F2} GB/s)");
        return dir;
    }
}

/// <summary>Deterministic bf16 bit patterns (xorshift64* per tensor, seeded from the seed and the tensor name).</summary>
static class RandomBf16
{
    public static void Write(Stream s, SafeTensorEntry e, long seed)
    {
        var buffer = new ulong[1 << 19]; // 4 MB, 2M values
        long values = e.ByteLength / 2;
        bool ones = e.Shape.Length == 1 && e.Name.EndsWith("norm.weight");
        ulong state = Seed(seed, e.Name);
        for (long done = 0; done < values;)
        {
            int n = (int)Math.Min(buffer.Length * 4L, values - done);
            int words = (n + 3) / 4;
            if (ones) Array.Fill(buffer, 0x3F803F803F803F80UL); // 1.0
            else
                for (int i = 0; i < words; i++)
                {
                    state ^= state >> 12; state ^= state << 25; state ^= state >> 27;
                    ulong r = state * 0x2545F4914F6CDD1DUL;
                    // per 16-bit lane: sign and 7 mantissa bits random, exponent 120 + (0..3): |x| in [2^-7, 2^-3)
                    ulong exponent = ((r >> 7) & 0x0003000300030003UL) + 0x0078007800780078UL;
                    buffer[i] = (r & 0x807F807F807F807FUL) | (exponent << 7);
                }
            s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(buffer.AsSpan()).Slice(0, n * 2));
            done += n;
        }
    }

    static ulong Seed(long seed, string name)
    {
        ulong h = 14695981039346656037UL ^ (ulong)seed; // FNV-1a over the name
        foreach (char c in name) { h ^= c; h *= 1099511628211UL; }
        return h == 0 ? 1 : h;
    }
}
