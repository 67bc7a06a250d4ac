namespace ML.Finetune.Bench;

static class ChildProcess
{
    /// <summary>
    /// True when this process runs as `dotnet x.dll` (a child needs the dll as its first argument); false under the
    /// apphost (`dotnet run`, or ./ML.Finetune.Bench), where the dll path must not be passed again.
    /// </summary>
    public static bool NeedsEntryAssembly(string entry) =>
        entry.EndsWith(".dll") && Path.GetFileNameWithoutExtension(Environment.ProcessPath ?? "") == "dotnet";

    /// <summary>GLIBC_TUNABLES giving a Python peer our training malloc settings (PyTorch makes no mallopt call of its own).</summary>
    public static string PeerMallocTunables() =>
        $"glibc.malloc.mmap_threshold={ML.Finetune.Runtime.MallocTuning.MmapThreshold}:glibc.malloc.trim_threshold={ML.Finetune.Runtime.MallocTuning.TrimThreshold}" +
        (ML.Finetune.Runtime.MallocTuning.MmapMax is int mm ? $":glibc.malloc.mmap_max={mm}" : "");
}
