namespace ML.Finetune.Bench;

static class ChildProcess
{
    /// <summary>
    /// True when this process runs as `dotnet x.dll` (a child needs the dll as its first argument); false under the
    /// apphost (`dotnet run`, or ./ML.Finetune.Bench), where the dll path must not be passed again.
    /// </summary>
    public static bool NeedsEntryAssembly(string entry) =>
        entry.EndsWith(".dll") && Path.GetFileNameWithoutExtension(Environment.ProcessPath ?? "") == "dotnet";
}
