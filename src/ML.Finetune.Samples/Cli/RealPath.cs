namespace ML.Finetune.Samples.Cli;

/// <summary>
/// Canonical paths for comparing an output folder with the inputs: absolute, every symbolic link resolved, '.' and '..'
/// applied after resolving (as the OS does), no trailing separator. Parts that do not exist yet are kept as written.
/// </summary>
public static class RealPath
{
    static readonly StringComparison Comparison = OperatingSystem.IsLinux() ? StringComparison.Ordinal : StringComparison.OrdinalIgnoreCase;

    public static string Of(string path) => Resolve(Path.IsPathRooted(path) ? path : Path.Combine(Environment.CurrentDirectory, path), 0);

    static string Resolve(string absolute, int depth)
    {
        if (depth > 40) throw new IOException($"too many levels of symbolic links: {absolute}");
        string root = Path.GetPathRoot(absolute)!;
        string current = root;
        bool exists = true;
        foreach (var part in absolute[root.Length..].Split(['/', '\\'], StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == ".") continue;
            if (part == "..") { current = Path.GetDirectoryName(current) ?? root; continue; }
            string next = Path.Combine(current, part);
            if (exists)
            {
                FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
                if (info.LinkTarget != null)
                {
                    string target = info.LinkTarget;
                    next = Resolve(Path.IsPathRooted(target) ? target : Path.Combine(current, target), depth + 1);
                }
                else exists = info.Exists;
            }
            current = next;
        }
        return current.Length > root.Length ? current.TrimEnd('/', '\\') : current;
    }

    public static bool Same(string a, string b) => string.Equals(a, b, Comparison);

    /// <summary>True when <paramref name="inner"/> lies strictly inside <paramref name="outer"/> (both real paths).</summary>
    public static bool IsInside(string inner, string outer)
    {
        string prefix = outer.EndsWith(Path.DirectorySeparatorChar) ? outer : outer + Path.DirectorySeparatorChar;
        return inner.Length > prefix.Length && inner.StartsWith(prefix, Comparison);
    }
}
