using System.Text.Json;

namespace ML.Finetune.Samples.Cli;

/// <summary>
/// The folder a command writes (--out), with proof of what it owns. Rules:
/// <list type="bullet">
/// <item>--out may not be, contain or lie inside an input (--model, --data, --facts, …), compared as real paths.</item>
/// <item>A non-empty folder is used only when this command wrote it before (its manifest says so), or with --overwrite.</item>
/// <item>Only this command's outputs are ever replaced or removed: the names it writes now (with --overwrite, also
///   when another program wrote them) and the outputs its manifest lists from an earlier run. Anything else stays.</item>
/// <item>Outputs are built in a staging folder under <c>&lt;out&gt;/.ml-finetune/</c> and committed by renames, with forced
///   stops held back, so the folder holds either the old or the new outputs; a failed or cancelled command removes
///   its staging folder (and a folder it created and left empty).</item>
/// </list>
/// <c>.ml-finetune/manifest.json</c> lists each output with the command that wrote it and the settings of an
/// unfinished training run; <c>.ml-finetune/checkpoints/</c> holds that run's checkpoints.
/// </summary>
public sealed class OutputFolder : IDisposable
{
    public const string StateFolderName = ".ml-finetune";
    const string ManifestFileName = "manifest.json";
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    readonly string _command, _shown;
    readonly bool _overwrite;
    readonly IDisposable _forcedStop;
    string? _staging;
    bool _scratch;

    OutputFolder(string command, string fullPath, string shown, bool overwrite)
    {
        _command = command; FullPath = fullPath; _shown = shown; _overwrite = overwrite;
        _forcedStop = CliCancellation.OnForcedStop(Cleanup);
    }

    public string FullPath { get; }
    public string StatePath => Path.Combine(FullPath, StateFolderName);
    public string CheckpointPath => Path.Combine(StatePath, "checkpoints");
    string ManifestPath => Path.Combine(StatePath, ManifestFileName);

    /// <summary>
    /// Checks --out (<paramref name="outDir"/>) against the inputs and against what the folder holds; creates nothing.
    /// <paramref name="planned"/>: the names this command will write at the top of the folder.
    /// </summary>
    public static OutputFolder Open(string command, string outDir, bool overwrite, IReadOnlyCollection<string> planned,
        params (string Option, string? Path)[] inputs)
    {
        // Under mpirun every rank runs the command (it trains data-parallel), but rank 0 alone owns --out: the other
        // ranks stage into a private scratch folder that disappears with them (and so never race rank 0's files).
        if (!ML.Finetune.Distributed.Communicator.World.IsRoot)
            return new OutputFolder(command, Directory.CreateTempSubdirectory("mlft-rank-scratch").FullName, outDir, overwrite) { _scratch = true };
        string full = RealPath.Of(outDir);
        foreach (var (option, path) in inputs)
        {
            if (path == null) continue;
            string input = RealPath.Of(path);
            if (RealPath.Same(full, input)) throw new CliException($"--out {outDir} is {option} itself ({path}); choose a separate output folder");
            if (RealPath.IsInside(full, input)) throw new CliException($"--out {outDir} lies inside {option} {path}; choose an output folder outside it");
            if (RealPath.IsInside(input, full)) throw new CliException($"--out {outDir} contains {option} {path}; choose an output folder that does not hold the inputs");
        }
        if (File.Exists(full)) throw new CliException($"--out {outDir} is a file; expected a folder");
        var folder = new OutputFolder(command, full, outDir, overwrite);
        if (!Directory.Exists(full)) return folder;
        var manifest = folder.LoadManifest();
        bool ours = manifest != null && (manifest.Outputs.ContainsValue(command) || manifest.Run?.Command == command);
        bool empty = !Directory.EnumerateFileSystemEntries(full).Any(e => Path.GetFileName(e) != StateFolderName);
        const string hint = "(use --overwrite to replace this command's own outputs)";
        if (!empty && !ours && !overwrite)
        {
            folder.Dispose();
            throw new CliException($"--out {outDir} is not empty and was not written by '{command}' {hint}");
        }
        var foreign = planned.Where(n => Exists(Path.Combine(full, n)) && manifest?.Outputs.GetValueOrDefault(n) != command).ToList();
        if (foreign.Count > 0 && !overwrite)
        {
            folder.Dispose();
            throw new CliException($"--out {outDir} already holds {string.Join(", ", foreign)}, not written by '{command}' {hint}");
        }
        return folder;
    }

    static bool Exists(string path) => File.Exists(path) || Directory.Exists(path) || new FileInfo(path).LinkTarget != null;

    /// <summary>Creates the folder (recording that this tool created it) and its state folder.</summary>
    void EnsureExists()
    {
        if (!Directory.Exists(FullPath))
        {
            Directory.CreateDirectory(StatePath);
            SaveManifest(new Manifest { CreatedFolder = true });
        }
        Directory.CreateDirectory(StatePath);
    }

    /// <summary>A new, empty staging folder to build this command's outputs in (named as they will be in --out).</summary>
    public string NewStaging()
    {
        if (_staging != null) throw new InvalidOperationException("one staging folder per command");
        EnsureExists();
        _staging = Path.Combine(StatePath, $"staging-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_staging);
        return _staging;
    }

    /// <summary>Replaces this command's outputs with the staging folder's entries; returns their names.</summary>
    public IReadOnlyList<string> Commit()
    {
        string staging = _staging ?? throw new InvalidOperationException("nothing staged");
        return CliCancellation.Uninterruptible(() =>
        {
            var manifest = LoadManifest() ?? new Manifest();
            var produced = Directory.EnumerateFileSystemEntries(staging).Select(e => Path.GetFileName(e)!).OrderBy(n => n, StringComparer.Ordinal).ToList();
            var foreign = produced.Where(n => Exists(Path.Combine(FullPath, n)) && manifest.Outputs.GetValueOrDefault(n) != _command).ToList();
            if (foreign.Count > 0 && !_overwrite)
                throw new CliException($"--out {_shown} now holds {string.Join(", ", foreign)}, not written by '{_command}' (use --overwrite to replace this command's own outputs)");
            var stale = manifest.Outputs.Where(kv => kv.Value == _command && !produced.Contains(kv.Key)).Select(kv => kv.Key).ToList();
            string replaced = Path.Combine(StatePath, $"replaced-{Guid.NewGuid():N}");
            Directory.CreateDirectory(replaced);
            var moves = new List<(string From, string To)>();
            try
            {
                foreach (var n in produced.Concat(stale).Where(n => Exists(Path.Combine(FullPath, n))))
                    Move(Path.Combine(FullPath, n), Path.Combine(replaced, n), moves);
                foreach (var n in produced) Move(Path.Combine(staging, n), Path.Combine(FullPath, n), moves);
            }
            catch
            {
                for (int i = moves.Count - 1; i >= 0; i--) Move(moves[i].To, moves[i].From, null);
                throw;
            }
            foreach (var n in stale) manifest.Outputs.Remove(n);
            foreach (var n in produced) manifest.Outputs[n] = _command;
            SaveManifest(manifest);
            CliCancellation.Delete(replaced);
            CliCancellation.Delete(staging);
            _staging = null;
            return (IReadOnlyList<string>)produced;
        });
    }

    static void Move(string from, string to, List<(string, string)>? log)
    {
        if (Directory.Exists(from) && new DirectoryInfo(from).LinkTarget == null) Directory.Move(from, to);
        else File.Move(from, to);
        log?.Add((from, to));
    }

    /// <summary>The settings of an unfinished run of this command recorded here (null when none).</summary>
    public IReadOnlyDictionary<string, string>? UnfinishedRun() => LoadManifest()?.Run is { } r && r.Command == _command ? r.Settings : null;

    /// <summary>Records the settings of a training run that keeps checkpoints here, so a rerun can tell whether it may resume.</summary>
    public void BeginRun(IReadOnlyDictionary<string, string> settings)
    {
        EnsureExists();
        var m = LoadManifest() ?? new Manifest();
        m.Run = new RunRecord { Command = _command, Settings = new SortedDictionary<string, string>(settings.ToDictionary(), StringComparer.Ordinal) };
        SaveManifest(m);
    }

    /// <summary>Removes the unfinished run's record and checkpoints (it finished, or cannot be resumed).</summary>
    public void EndRun()
    {
        if (Directory.Exists(CheckpointPath)) CliCancellation.Delete(CheckpointPath);
        var m = LoadManifest();
        if (m?.Run == null) return;
        m.Run = null;
        SaveManifest(m);
    }

    Manifest? LoadManifest()
    {
        if (!File.Exists(ManifestPath)) return null;
        try { return JsonSerializer.Deserialize<Manifest>(File.ReadAllText(ManifestPath)) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{ManifestPath}: not a valid output manifest ({e.Message}); remove {StatePath} to start afresh"); }
    }

    void SaveManifest(Manifest m)
    {
        Directory.CreateDirectory(StatePath);
        string tmp = ManifestPath + $".tmp-{Guid.NewGuid():N}";
        File.WriteAllText(tmp, JsonSerializer.Serialize(m, Json));
        File.Move(tmp, ManifestPath, overwrite: true);
    }

    /// <summary>
    /// Removes the staging folder and a run record without checkpoints (nothing to resume), then the state folder when it
    /// records nothing more, then the folder itself when this tool created it and it is empty.
    /// </summary>
    void Cleanup()
    {
        if (_scratch) { if (Directory.Exists(FullPath)) CliCancellation.Delete(FullPath); return; }
        if (_staging != null) { CliCancellation.Delete(_staging); _staging = null; }
        if (!Directory.Exists(StatePath)) return;
        if (Training.TrainingCheckpoint.List(CheckpointPath).Count == 0) EndRun();
        var m = LoadManifest();
        bool holds = m is { Outputs.Count: > 0 } || m?.Run != null
                     || Directory.EnumerateFileSystemEntries(StatePath).Any(e => Path.GetFileName(e) != ManifestFileName);
        if (holds) return;
        CliCancellation.Delete(StatePath);
        if (m?.CreatedFolder == true && !Directory.EnumerateFileSystemEntries(FullPath).Any()) Directory.Delete(FullPath);
    }

    public void Dispose()
    {
        _forcedStop.Dispose();
        Cleanup();
    }

    sealed class Manifest
    {
        public int Version { get; set; } = 1;
        /// <summary>The folder did not exist before this tool wrote it (so an empty one may be removed).</summary>
        public bool CreatedFolder { get; set; }
        /// <summary>Top-level name → the command that wrote it.</summary>
        public SortedDictionary<string, string> Outputs { get; set; } = new(StringComparer.Ordinal);
        public RunRecord? Run { get; set; }
    }

    sealed class RunRecord
    {
        public string Command { get; set; } = "";
        public SortedDictionary<string, string> Settings { get; set; } = new(StringComparer.Ordinal);
    }
}
