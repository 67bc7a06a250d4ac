using System.Text.Json;
using ML.Finetune.Checkpoints;
using ML.Finetune.Runtime;
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
    /// <summary>
    /// True (default): on the CPU, a parameter stored in <see cref="DType"/> (not transposed, aligned) is the
    /// memory-mapped file itself rather than a copy, as transformers/safetensors do: loading reads nothing up front,
    /// the pages are shared with the page cache, are read when first used, and can be dropped and re-read under memory
    /// pressure. The mapping is copy-on-write: a weight written in place (full finetuning) gets private pages and the
    /// file never changes. The files must not be truncated or rewritten in place while the model lives (replacing
    /// them with a new file, as downloads and <see cref="CausalLMFactory.SavePretrained"/> do, is fine).
    /// False: every parameter is a copy.
    /// </summary>
    public bool MapWeights { get; init; } = true;
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

    /// <summary>
    /// Loads config.json + model.safetensors (or shards with model.safetensors.index.json) with strict name, shape and
    /// dtype checks. Lean: the modules are built on the meta device (<see cref="MetaConstruction"/>), every header is
    /// checked before a tensor byte is read, and each parameter is then created in <see cref="ModelLoadOptions.DType"/>
    /// on <see cref="ModelLoadOptions.Device"/> and filled from the memory-mapped file (converted and, for GPT-2's
    /// Conv1D, transposed on the way), so peak memory is the model in its target dtype plus one 64 MB window; or, where
    /// nothing needs converting, is the mapped file itself (<see cref="ModelLoadOptions.MapWeights"/>).
    /// </summary>
    public static CausalLM LoadPretrained(string folder, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"model folder not found: {folder}");
        var config = CausalLMConfig.Load(folder);
        var (files, index, weightMap) = ResolveWeights(folder, options.AllowPickle);
        using var checkpoint = PretrainedCheckpoint.Open(files, index, weightMap);
        var model = MetaConstruction.Build(() => Create(config));
        try
        {
            var expected = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
            var sources = checkpoint.Match(expected, new Layout(config));
            ModuleMaterializer.Materialize(model, (name, _) => PretrainedCheckpoint.Read(sources[name], options.DType, options.Device, options.MapWeights));
            if (options.MapWeights)
                model.MappedWeights = sources.Where(kv => PretrainedCheckpoint.CanAlias(kv.Value, options.DType, options.Device))
                    .ToDictionary(kv => kv.Key, kv => new MappedWeight(kv.Value.File.Path, kv.Value.Info));
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Which checkpoint keys are stored transposed or carry nothing the model uses.</summary>
    sealed class Layout(CausalLMConfig config) : ICheckpointLayout
    {
        public string ModelType => config.ModelType;
        public bool IsTransposed(string key) => config.IsGpt2 && Gpt2LMHeadModel.IsConv1DWeight(key);
        public bool IsIgnored(string key) =>
            (config.IsGpt2 && Gpt2LMHeadModel.IsIgnoredKey(key)) ||
            (config.TieWordEmbeddings && key == "lm_head.weight"); // tied: the file's copy is redundant
    }

    static CausalLM Finish(CausalLM model, ScalarType dtype, Device? device)
    {
        if (dtype != ScalarType.Float32) model.to(dtype);
        if (device != null && device.type != DeviceType.CPU) model.to(device);
        model.eval();
        return model;
    }

    /// <summary>The safetensors files of a folder; refuses pickle and names what is missing.</summary>
    public static IReadOnlyList<string> WeightFiles(string folder, bool allowPickle = false) => ResolveWeights(folder, allowPickle).Files;

    static (IReadOnlyList<string> Files, string? Index, IReadOnlyDictionary<string, string>? WeightMap) ResolveWeights(string folder, bool allowPickle)
    {
        string single = Path.Combine(folder, WeightsFile);
        if (File.Exists(single)) return ([single], null, null);
        string index = Path.Combine(folder, IndexFile);
        if (File.Exists(index))
        {
            var map = ReadIndex(index);
            var paths = map.Values.Distinct().Order(StringComparer.Ordinal).Select(s => Path.Combine(folder, s)).ToList();
            foreach (var p in paths) if (!File.Exists(p)) throw new FileNotFoundException($"shard listed in {index} not found: {p}", p);
            return (paths, index, map);
        }
        var pickle = Directory.EnumerateFiles(folder).FirstOrDefault(SafeTensors.IsPickleFile);
        if (pickle != null) SafeTensors.ThrowForPickle(pickle, allowPickle);
        throw new FileNotFoundException($"no weights found: expected {single} or {index}", single);
    }

    /// <summary>weight_map of a shard index: tensor name → shard file name (a plain file name in the folder).</summary>
    static Dictionary<string, string> ReadIndex(string index)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(index));
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException($"{index}: field 'weight_map' is missing or not an object") { FilePath = index };
            var shards = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var e in map.EnumerateObject())
            {
                string? f = e.Value.ValueKind == JsonValueKind.String ? e.Value.GetString() : null;
                // Shard names must be plain file names inside the folder (no path traversal).
                if (string.IsNullOrEmpty(f) || f != Path.GetFileName(f) || !f.EndsWith(".safetensors"))
                    throw new CheckpointFormatException($"{index}: field 'weight_map.{e.Name}' must name a .safetensors file in the folder") { FilePath = index };
                if (!shards.TryAdd(e.Name, f))
                    throw new CheckpointFormatException($"{index}: field 'weight_map.{e.Name}' appears twice") { FilePath = index };
            }
            if (shards.Count == 0) throw new CheckpointFormatException($"{index}: field 'weight_map' is empty") { FilePath = index };
            return shards;
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
