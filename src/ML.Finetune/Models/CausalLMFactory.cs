using System.Text.Json;
using ML.Finetune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

public sealed class ModelLoadOptions
{
    /// <summary>Device to place the model on (default CPU).</summary>
    public Device? Device { get; init; }
    /// <summary>Compute dtype (default float32). Float16/BFloat16 checkpoints are converted to it.</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;
    /// <summary>Opt-in for pickle weights; even then we refuse with a "not implemented" message.</summary>
    public bool AllowPickle { get; init; }
}

/// <summary>Creates, loads and saves causal LMs in the Hugging Face folder layout.</summary>
public static class CausalLMFactory
{
    public const string WeightsFile = "model.safetensors";
    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>
    /// The module tree for a config (parameters uninitialised). The constructors only create parameters through torch
    /// factory functions without dtype/device arguments, so a surrounding default-dtype/device scope applies.
    /// </summary>
    public static CausalLM Create(CausalLMConfig config)
    {
        config.GetFamily(); // a clear error for an unsupported model_type
        return config.IsGpt2 ? new Gpt2LMHeadModel(config) : new DecoderLM(config);
    }

    /// <summary>
    /// Random θ₀: matrices and embeddings N(0, 0.02), biases 0, norm weights at their neutral value (1, or 0 for
    /// Gemma's x̂·(1 + w) norms). Deterministic by seed.
    /// </summary>
    public static CausalLM CreateRandom(CausalLMConfig config, long seed, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        config.Validate();
        var model = Create(config);
        var zeroCentred = model.named_modules().Where(m => m.module is RMSNorm { OffsetWeight: true }).Select(m => m.name + ".weight").ToHashSet();
        using var gen = new Generator((ulong)seed);
        using (torch.no_grad())
        {
            foreach (var (name, p) in model.named_parameters())
            {
                if (name.EndsWith(".bias") || zeroCentred.Contains(name)) p.zero_();
                else if (p.dim() == 1) p.fill_(1.0);
                else { using var r = torch.randn(p.shape, generator: gen); p.copy_(r.mul_(0.02)); }
            }
        }
        return Finish(model, dtype, device);
    }

    /// <summary>Loads config.json + model.safetensors (or shards with an index) with strict name and shape checks.</summary>
    public static CausalLM LoadPretrained(string folder, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"model folder not found: {folder}");
        var config = CausalLMConfig.Load(folder);
        var files = WeightFiles(folder, options.AllowPickle);
        var model = Create(config);
        var expected = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var seen = new HashSet<string>();
        using (torch.no_grad())
        {
            foreach (var file in files)
            {
                var header = SafeTensors.ReadHeader(file);
                foreach (var key in header.Tensors.Keys)
                {
                    if (expected.ContainsKey(key)) continue;
                    if (config.IsGpt2 && Gpt2LMHeadModel.IsIgnoredKey(key)) continue;
                    if (config.TieWordEmbeddings && key == "lm_head.weight") continue; // tied: the file's copy is redundant
                    throw new CheckpointFormatException($"{file}: tensor '{key}' is unexpected for a {config.ModelType} model with this config") { FilePath = file };
                }
                var loaded = SafeTensors.Load(file, filter: expected.ContainsKey);
                try
                {
                    foreach (var (key, t) in loaded)
                    {
                        var p = expected[key];
                        var src = config.IsGpt2 && Gpt2LMHeadModel.IsConv1DWeight(key) && t.dim() == 2 ? t.t() : t;
                        if (!src.shape.SequenceEqual(p.shape))
                            throw new CheckpointFormatException(
                                $"{file}: tensor '{key}' has shape [{string.Join(",", t.shape)}] but the config expects " +
                                $"[{string.Join(",", config.IsGpt2 && Gpt2LMHeadModel.IsConv1DWeight(key) ? p.shape.Reverse() : p.shape)}]") { FilePath = file };
                        if (!src.is_floating_point())
                            throw new CheckpointFormatException($"{file}: tensor '{key}' has non-floating dtype {t.dtype}") { FilePath = file };
                        if (!seen.Add(key)) throw new CheckpointFormatException($"{file}: tensor '{key}' appears in more than one shard") { FilePath = file };
                        p.copy_(src);
                    }
                }
                finally { foreach (var t in loaded.Values) t.Dispose(); }
            }
        }
        var missing = expected.Keys.Where(k => !seen.Contains(k)).ToList();
        if (missing.Count > 0)
            throw new CheckpointFormatException(
                $"{string.Join(", ", files)}: missing tensor(s) {string.Join(", ", missing.Take(5).Select(m => $"'{m}' [{string.Join(",", expected[m].shape)}]"))}" +
                (missing.Count > 5 ? $" and {missing.Count - 5} more" : "")) { FilePath = files[0] };
        return Finish(model, options.DType, options.Device);
    }

    static CausalLM Finish(CausalLM model, ScalarType dtype, Device? device)
    {
        if (dtype != ScalarType.Float32) model.to(dtype);
        if (device != null && device.type != DeviceType.CPU) model.to(device);
        model.eval();
        return model;
    }

    /// <summary>The safetensors files of a folder; refuses pickle and names what is missing.</summary>
    public static IReadOnlyList<string> WeightFiles(string folder, bool allowPickle = false)
    {
        string single = Path.Combine(folder, WeightsFile);
        if (File.Exists(single)) return [single];
        string index = Path.Combine(folder, IndexFile);
        if (File.Exists(index)) return ShardsFromIndex(folder, index);
        var pickle = Directory.EnumerateFiles(folder).FirstOrDefault(SafeTensors.IsPickleFile);
        if (pickle != null) SafeTensors.ThrowForPickle(pickle, allowPickle);
        throw new FileNotFoundException($"no weights found: expected {single} or {index}", single);
    }

    static IReadOnlyList<string> ShardsFromIndex(string folder, string index)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(index));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException($"{index}: field 'weight_map' is missing or not an object") { FilePath = index };
            var shards = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var e in map.EnumerateObject())
            {
                string? f = e.Value.ValueKind == JsonValueKind.String ? e.Value.GetString() : null;
                // Shard names must be plain file names inside the folder (no path traversal).
                if (string.IsNullOrEmpty(f) || f != Path.GetFileName(f) || !f.EndsWith(".safetensors"))
                    throw new CheckpointFormatException($"{index}: field 'weight_map.{e.Name}' must name a .safetensors file in the folder") { FilePath = index };
                shards.Add(f);
            }
            var paths = shards.Select(s => Path.Combine(folder, s)).ToList();
            foreach (var p in paths) if (!File.Exists(p)) throw new FileNotFoundException($"shard listed in {index} not found: {p}", p);
            if (paths.Count == 0) throw new CheckpointFormatException($"{index}: field 'weight_map' is empty") { FilePath = index };
            return paths;
        }
        catch (JsonException e) { throw new CheckpointFormatException($"{index}: field '(root)': not valid JSON: {e.Message}", e) { FilePath = index }; }
    }

    /// <summary>Writes config.json, generation_config.json and model.safetensors that transformers can load.</summary>
    public static void SavePretrained(CausalLM model, string folder)
    {
        Directory.CreateDirectory(folder);
        var config = model.Config;
        using var scope = torch.NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var adapterPrefixes = model.NamedLinears().Where(l => l.module.Adapter != null)
            .Select(l => $"{l.path}.{l.module.Adapter!.Name}.").ToList();
        foreach (var (name, p) in model.named_parameters())
        {
            if (adapterPrefixes.Any(name.StartsWith)) continue; // adapters are saved separately
            var t = p.detach();
            if (config.IsGpt2 && Gpt2LMHeadModel.IsConv1DWeight(name)) t = t.t();
            tensors[name] = t.contiguous();
        }
        SafeTensors.Save(Path.Combine(folder, WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(folder, "config.json"), config.ToJson());
        var gen = new Dictionary<string, object?> { ["bos_token_id"] = config.BosTokenId, ["pad_token_id"] = config.PadTokenId };
        if (config.EosTokenIds.Count > 0) gen["eos_token_id"] = config.EosTokenIds.Count == 1 ? config.EosTokenIds[0] : config.EosTokenIds;
        AtomicFile.WriteAllText(Path.Combine(folder, "generation_config.json"),
            JsonSerializer.Serialize(gen.Where(kv => kv.Value != null).ToDictionary(), new JsonSerializerOptions { WriteIndented = true }));
    }
}
