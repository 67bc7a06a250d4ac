using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Checkpoints;

/// <summary>Where one model parameter comes from: a tensor in a mapped file, stored transposed or not.</summary>
public sealed record WeightSource(SafeTensorsMapping File, SafeTensorInfo Info, bool Transposed);

/// <summary>
/// A parameter that was loaded as the mapped file itself (<see cref="PretrainedCheckpoint.Read"/> with alias): its file
/// and stored tensor, so that a second, read-only view of the same pretrained values can be made later without a copy.
/// </summary>
public sealed record MappedWeight(string Path, SafeTensorInfo Info)
{
    /// <summary>
    /// A new tensor that is the stored tensor again in <paramref name="file"/> (opened on <see cref="Path"/>): another
    /// copy-on-write mapping whose pages are shared with the page cache; null when the file no longer holds that tensor
    /// at the same place (changed since loading). The tensor's mapping outlives <paramref name="file"/>.
    /// </summary>
    public Tensor? MapAgain(SafeTensorsMapping file)
    {
        if (!file.Header.Tensors.TryGetValue(Info.Name, out var now) || now.DType != Info.DType || now.Begin != Info.Begin
            || now.End != Info.End || !now.Shape.SequenceEqual(Info.Shape) || !file.IsAligned(now)) return null;
        return file.Alias(now);
    }
}

/// <summary>How a checkpoint key relates to a model: see <see cref="PretrainedCheckpoint.Match"/>.</summary>
public interface ICheckpointLayout
{
    /// <summary>Shown in errors, e.g. "llama".</summary>
    string ModelType { get; }
    /// <summary>The stored tensor is the transpose of the parameter (GPT-2's Conv1D).</summary>
    bool IsTransposed(string key);
    /// <summary>Keys a checkpoint may carry that the model does not use (non-persistent buffers, a tied head's copy).</summary>
    bool IsIgnored(string key);
}

/// <summary>
/// The safetensors files of a Hugging Face folder, memory-mapped, with their headers (and the shard index when there
/// is one) checked against a model's parameters before any tensor byte is read: no unexpected, missing or duplicate
/// tensors, shapes as the config says, floating dtypes, an index that agrees with the shards. Errors name the file and
/// the tensor.
/// </summary>
public sealed class PretrainedCheckpoint : IDisposable
{
    readonly List<SafeTensorsMapping> _files = [];
    readonly IReadOnlyDictionary<string, string>? _weightMap;
    readonly string? _indexPath;

    public IReadOnlyList<SafeTensorsMapping> Files => _files;

    PretrainedCheckpoint(string? indexPath, IReadOnlyDictionary<string, string>? weightMap) { _indexPath = indexPath; _weightMap = weightMap; }

    /// <summary>Maps <paramref name="files"/>; <paramref name="weightMap"/> is the index's tensor → shard file name.</summary>
    public static PretrainedCheckpoint Open(IReadOnlyList<string> files, string? indexPath = null, IReadOnlyDictionary<string, string>? weightMap = null)
    {
        var checkpoint = new PretrainedCheckpoint(indexPath, weightMap);
        try
        {
            foreach (var f in files) checkpoint._files.Add(SafeTensorsMapping.Open(f));
            checkpoint.CheckIndex();
            return checkpoint;
        }
        catch { checkpoint.Dispose(); throw; }
    }

    void CheckIndex()
    {
        if (_weightMap == null) return;
        var byName = _files.ToDictionary(f => System.IO.Path.GetFileName(f.Path), StringComparer.Ordinal);
        foreach (var (key, shard) in _weightMap)
            if (!byName.TryGetValue(shard, out var f) || !f.Header.Tensors.ContainsKey(key))
                throw new CheckpointFormatException($"{_indexPath}: weight_map puts tensor '{key}' in {shard}, which has no such tensor") { FilePath = _indexPath };
        foreach (var f in _files)
            foreach (var key in f.Header.Tensors.Keys)
                if (!_weightMap.ContainsKey(key))
                    throw new CheckpointFormatException($"{f.Path}: tensor '{key}' is not listed in {_indexPath}") { FilePath = f.Path };
    }

    /// <summary>
    /// Pairs every expected parameter (name → shape, in the model's layout) with its stored tensor. Throws
    /// <see cref="CheckpointFormatException"/> for an unexpected key, a non-floating dtype, a wrong shape, a tensor
    /// stored twice or a parameter missing.
    /// </summary>
    public Dictionary<string, WeightSource> Match(IReadOnlyDictionary<string, long[]> expected, ICheckpointLayout layout)
    {
        var sources = new Dictionary<string, WeightSource>(StringComparer.Ordinal);
        foreach (var file in _files)
        {
            string path = file.Path;
            foreach (var info in file.Header.Tensors.Values.OrderBy(t => t.Begin))
            {
                string key = info.Name;
                if (!expected.TryGetValue(key, out var shape))
                {
                    if (layout.IsIgnored(key)) continue;
                    throw Bad(path, $"{path}: tensor '{key}' is unexpected for a {layout.ModelType} model with this config");
                }
                bool transposed = layout.IsTransposed(key) && info.Shape.Length == 2;
                var stored = transposed ? shape.Reverse().ToArray() : shape;
                if (!info.Shape.SequenceEqual(stored))
                    throw Bad(path, $"{path}: tensor '{key}' has shape [{string.Join(",", info.Shape)}] but the config expects [{string.Join(",", stored)}]");
                if (!SafeTensors.IsFloating(info.DType))
                    throw Bad(path, $"{path}: tensor '{key}' has non-floating dtype {info.DType}");
                if (!sources.TryAdd(key, new WeightSource(file, info, transposed)))
                    throw Bad(path, $"{path}: tensor '{key}' appears in more than one shard (also in {sources[key].File.Path})");
            }
        }
        var missing = expected.Keys.Where(k => !sources.ContainsKey(k)).ToList();
        if (missing.Count > 0)
            throw Bad(_files[0].Path,
                $"{string.Join(", ", _files.Select(f => f.Path))}: missing tensor(s) {string.Join(", ", missing.Take(5).Select(m => $"'{m}' [{string.Join(",", expected[m])}]"))}" +
                (missing.Count > 5 ? $" and {missing.Count - 5} more" : ""));
        return sources;
    }

    /// <summary>
    /// The parameter's tensor in <paramref name="dtype"/> on <paramref name="device"/>: the mapped file itself when
    /// <paramref name="alias"/> allows it and nothing needs converting (CPU, same dtype, not transposed, aligned),
    /// otherwise fresh storage filled from the mapping.
    /// </summary>
    public static Tensor Read(WeightSource source, ScalarType dtype, Device? device, bool alias)
    {
        var (file, info, transposed) = source;
        if (alias && CanAlias(source, dtype, device)) return file.Alias(info);
        var shape = transposed ? [info.Shape[1], info.Shape[0]] : info.Shape;
        var t = torch.empty(shape, dtype, device);
        try { file.CopyTo(info, t, transposed); }
        catch { t.Dispose(); throw; }
        return t;
    }

    /// <summary>Whether <see cref="Read"/> with alias returns the mapped file itself: CPU, same dtype, not transposed, aligned.</summary>
    public static bool CanAlias(WeightSource source, ScalarType dtype, Device? device) =>
        (device == null || device.type == DeviceType.CPU) && !source.Transposed
        && SafeTensors.ScalarTypeOf(source.Info.DType) == dtype && source.File.IsAligned(source.Info);

    static CheckpointFormatException Bad(string path, string message) => new(message) { FilePath = path };

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}
