namespace ML.Finetune.Samples.Cli;

/// <summary>
/// A single output file a command writes (e.g. evaluate --predictions): never an input, never an existing file unless
/// --overwrite, written to a temporary file beside it and renamed into place, so it is either absent/old or complete.
/// </summary>
public static class OutputFile
{
    /// <summary>Checks <paramref name="path"/> (given as <paramref name="option"/>) before any work is done.</summary>
    public static void Check(string option, string path, bool overwrite, params (string Option, string? Path)[] inputs)
    {
        string full = RealPath.Of(path);
        foreach (var (inputOption, input) in inputs)
            if (input != null && RealPath.Same(full, RealPath.Of(input)))
                throw new CliException($"{option} {path} is {inputOption} itself; choose another file");
        if (Directory.Exists(full)) throw new CliException($"{option} {path} is a folder; expected a file name");
        if (File.Exists(full) && !overwrite) throw new CliException($"{option} {path} already exists (use --overwrite to replace it)");
        string? parent = Path.GetDirectoryName(full);
        if (parent != null && !Directory.Exists(parent)) throw new CliException($"{option} {path}: folder {parent} does not exist");
    }

    /// <summary>Writes through <paramref name="write"/> into a temporary sibling, then renames it over <paramref name="path"/>.</summary>
    public static void Write(string path, Action<string> write)
    {
        string full = RealPath.Of(path);
        string tmp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}");
        using var forced = CliCancellation.OnForcedStop(() => CliCancellation.Delete(tmp));
        try
        {
            write(tmp);
            CliCancellation.Token.ThrowIfCancellationRequested();
            CliCancellation.Uninterruptible(() => File.Move(tmp, full, overwrite: true));
        }
        finally { CliCancellation.Delete(tmp); }
    }
}
