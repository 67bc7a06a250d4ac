using System.Security.Cryptography;
using System.Text.Json;
using ML.Finetune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

/// <summary>Scalar state of a run at a checkpoint (state.json).</summary>
public sealed class CheckpointState
{
    public int FormatVersion { get; set; } = 1;
    /// <summary>Optimizer steps completed.</summary>
    public int Step { get; set; }
    public long Seed { get; set; }
    public string Method { get; set; } = "";
    /// <summary>Data position: the current epoch's order, the cursor in it and how many shuffles the seeded RNG made.</summary>
    public int[] Order { get; set; } = [];
    public int Cursor { get; set; }
    public int Shuffles { get; set; }
    /// <summary>torch's default CPU generator state (dropout), base64; rank 0's under data parallelism.</summary>
    public string TorchRngState { get; set; } = "";
    /// <summary>Data-parallel ranks of the run that wrote the checkpoint (1 = one process).</summary>
    public int WorldSize { get; set; } = 1;
    /// <summary>The generator states of ranks 1 … WorldSize − 1 (each rank draws its own dropout masks), base64.</summary>
    public string[] RankTorchRngStates { get; set; } = [];
    public string HistoryCsv { get; set; } = "";
    public double BestValidationLoss { get; set; } = double.PositiveInfinity;
    public int BestStep { get; set; } = -1;
    public int EvaluationsWithoutImprovement { get; set; }
    /// <summary>SHA-256 (hex) of every other file in the checkpoint folder; a mismatch means the checkpoint is corrupt.</summary>
    public Dictionary<string, string> Sha256 { get; set; } = new();
}

/// <summary>
/// Checkpoint folders of a training run: <c>&lt;root&gt;/step-00000010/</c> with trainable.safetensors (the method's
/// trainable parameters), optimizer.safetensors, best.safetensors (early stopping's best weights, when any) and
/// state.json (step, data position, RNG state, history, SHA-256 of the other files). A checkpoint is written into a
/// temporary folder and renamed into place, so a reader never sees a half-written one; a folder whose hashes do not
/// match (or that does not parse) is skipped with a warning and the previous checkpoint is used.
/// </summary>
public static class TrainingCheckpoint
{
    public const string TrainableFile = "trainable.safetensors", OptimizerFile = "optimizer.safetensors",
        BestFile = "best.safetensors", StateFile = "state.json";
    const string Prefix = "step-";

    public sealed record Loaded(string Folder, CheckpointState State, Dictionary<string, Tensor> Trainable,
        Dictionary<string, Tensor> Optimizer, Dictionary<string, Tensor>? Best) : IDisposable
    {
        public void Dispose()
        {
            foreach (var t in Trainable.Values.Concat(Optimizer.Values).Concat(Best?.Values ?? Enumerable.Empty<Tensor>())) t.Dispose();
        }
    }

    /// <summary>Writes a checkpoint atomically and keeps only the newest <paramref name="keep"/> (at least 2).</summary>
    public static string Save(string root, CheckpointState state, IReadOnlyDictionary<string, Tensor> trainable,
        IReadOnlyDictionary<string, Tensor> optimizer, IReadOnlyDictionary<string, Tensor>? best, int keep = 2)
    {
        Directory.CreateDirectory(root);
        string final = Path.Combine(root, $"{Prefix}{state.Step:D8}");
        string tmp = Path.Combine(root, $".tmp-{Prefix}{state.Step:D8}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            using (var scope = torch.NewDisposeScope())
            {
                SafeTensors.Save(Path.Combine(tmp, TrainableFile), trainable.ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu().contiguous()));
                SafeTensors.Save(Path.Combine(tmp, OptimizerFile), optimizer);
                if (best != null) SafeTensors.Save(Path.Combine(tmp, BestFile), best.ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu().contiguous()));
            }
            state.Sha256 = Directory.GetFiles(tmp).ToDictionary(f => Path.GetFileName(f), Hash);
            File.WriteAllText(Path.Combine(tmp, StateFile), JsonSerializer.Serialize(state, Json));
            foreach (var f in Directory.GetFiles(tmp)) { using var fs = new FileStream(f, FileMode.Open, FileAccess.ReadWrite); fs.Flush(true); }
            if (Directory.Exists(final)) Directory.Delete(final, true); // same step written again (e.g. a rerun)
            Directory.Move(tmp, final);
        }
        catch
        {
            try { Directory.Delete(tmp, true); } catch (IOException) { }
            throw;
        }
        foreach (var old in List(root).Skip(Math.Max(2, keep))) { try { Directory.Delete(old, true); } catch (IOException) { } }
        return final;
    }

    /// <summary>Checkpoint folders, newest first (temporary folders of interrupted writes are ignored).</summary>
    public static IReadOnlyList<string> List(string root) =>
        !Directory.Exists(root) ? [] :
        Directory.GetDirectories(root, Prefix + "*").Where(d => int.TryParse(Path.GetFileName(d)[Prefix.Length..], out _))
            .OrderByDescending(d => int.Parse(Path.GetFileName(d)[Prefix.Length..])).ToList();

    /// <summary>
    /// The newest checkpoint that verifies (hashes, parse); corrupt ones are reported through <paramref name="warn"/>
    /// and skipped. Null when the folder has no checkpoints; throws <see cref="InvalidDataException"/> when it has
    /// some but none verifies (never starts over silently, never loads garbage).
    /// </summary>
    public static Loaded? LoadLatest(string root, Action<string>? warn = null)
    {
        var all = List(root);
        var problems = new List<string>();
        foreach (var dir in all)
        {
            try { return Load(dir); }
            catch (Exception e) when (e is InvalidDataException or IOException or JsonException or FormatException or UnauthorizedAccessException)
            {
                string msg = $"checkpoint {dir} is unusable ({e.Message}); falling back to the previous one";
                problems.Add(msg);
                warn?.Invoke(msg);
            }
        }
        if (all.Count > 0)
            throw new InvalidDataException($"no usable checkpoint in {root}: {string.Join("; ", problems)}");
        return null;
    }

    /// <summary>Loads and verifies one checkpoint folder.</summary>
    public static Loaded Load(string dir)
    {
        string statePath = Path.Combine(dir, StateFile);
        if (!File.Exists(statePath)) throw new InvalidDataException($"{StateFile} missing");
        var state = JsonSerializer.Deserialize<CheckpointState>(File.ReadAllText(statePath), Json)
                    ?? throw new InvalidDataException($"{StateFile} is empty");
        if (state.FormatVersion != 1) throw new InvalidDataException($"unknown checkpoint format version {state.FormatVersion}");
        foreach (var required in new[] { TrainableFile, OptimizerFile })
            if (!state.Sha256.ContainsKey(required)) throw new InvalidDataException($"{required} is not listed in {StateFile}");
        foreach (var (file, sha) in state.Sha256)
        {
            string path = Path.Combine(dir, Path.GetFileName(file));
            if (!File.Exists(path)) throw new InvalidDataException($"{file} missing");
            if (!string.Equals(Hash(path), sha, StringComparison.OrdinalIgnoreCase)) throw new InvalidDataException($"{file} does not match its SHA-256 (corrupt or partially written)");
        }
        var trainable = SafeTensors.Load(Path.Combine(dir, TrainableFile));
        var opt = SafeTensors.Load(Path.Combine(dir, OptimizerFile));
        var best = state.Sha256.ContainsKey(BestFile) ? SafeTensors.Load(Path.Combine(dir, BestFile)) : null;
        foreach (var t in trainable.Values.Concat(opt.Values).Concat(best?.Values ?? Enumerable.Empty<Tensor>())) t.DetachFromDisposeScope();
        return new Loaded(dir, state, trainable, opt, best);
    }

    static string Hash(string path)
    {
        using var fs = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(fs));
    }

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}
