namespace ML.Finetune.Samples.Cli;

/// <summary>
/// Commands write their output folder whole or not at all: it is built in a temporary folder beside the target and
/// moved into place only when <c>build</c> succeeded; on failure the temporary folder is removed.
/// </summary>
internal static class OutputFolder
{
    /// <summary>Builds into a temporary folder, replaces <paramref name="outDir"/> with it, and returns its full path.</summary>
    public static string Write(string outDir, Action<string> build)
    {
        string full = Path.GetFullPath(outDir);
        if (!ML.Finetune.Distributed.Communicator.World.IsRoot)
        {
            // Under mpirun every rank runs the build (it trains data-parallel), but rank 0 alone writes the output folder.
            string scratch = Directory.CreateTempSubdirectory("mlft-rank-scratch").FullName;
            try { build(scratch); return full; }
            finally { Directory.Delete(scratch, recursive: true); }
        }
        string tmp = full.TrimEnd(Path.DirectorySeparatorChar) + $".tmp-{Guid.NewGuid():N}";
        try
        {
            Directory.CreateDirectory(tmp);
            build(tmp);
            if (Directory.Exists(full)) Directory.Delete(full, recursive: true);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            Directory.Move(tmp, full);
            return full;
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        }
    }
}
