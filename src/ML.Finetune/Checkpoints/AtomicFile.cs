namespace ML.Finetune.Checkpoints;

/// <summary>Writes that never leave half a file: a temporary file beside the target, then a rename over it.</summary>
public static class AtomicFile
{
    /// <summary>A temporary name in the target's folder (a rename within one file system is atomic).</summary>
    public static string TempPathFor(string path) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");

    public static void WriteAllText(string path, string text)
    {
        string tmp = TempPathFor(path);
        try
        {
            File.WriteAllText(tmp, text);
            File.Move(tmp, path, overwrite: true);
        }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
    }
}
