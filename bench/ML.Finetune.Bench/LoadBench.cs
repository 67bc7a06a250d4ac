using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

public sealed record LoadResult(
    string Impl, string Shape, string DType, bool Mapped, bool Cold, double LoadSeconds, double LoadCpuSeconds, double TouchSeconds,
    double PeakRssMiB, double BaselineRssMiB,
    double RssAfterMiB, double RssAnonMiB, double RssFileMiB, long ModelBytes, long Parameters, double FileGB, string Notes)
{
    /// <summary>The issue's target: peak RSS during load ≤ 1.15 × model bytes in the target dtype + 300 MB.</summary>
    public double TargetMiB => 1.15 * ModelBytes / (1 << 20) + 300;
}

/// <summary>
/// Load time and peak RSS of the real shapes (<see cref="RealShapes"/>): each (shape, dtype, mapped) in its own child
/// process, ours and the PyTorch peer (transformers' from_pretrained, bench/peer_load.py) back to back on the same
/// folder. Combinations whose expected peak exceeds --max-rss-gb are skipped with the command that runs them.
/// </summary>
static class LoadBench
{
    public sealed class Options
    {
        public string ModelsDir = "/work/bench-models";
        public string[] Shapes = RealShapes.All.Select(s => s.Name).ToArray();
        public string[] DTypes = ["bf16", "fp32"];
        public bool Map, Cold, Peer = true, DiskRead = true, RopeScaling;
        public double MaxRssGB = 8;
        public int Threads = 2;
        public long Seed = 1;
        /// <summary>$BENCH_PYTHON (e.g. ../shared/peer/sid-python); no peer when unset.</summary>
        public string? PeerPython = Environment.GetEnvironmentVariable("BENCH_PYTHON") is { Length: > 0 } p ? p : null;
        /// <summary>The chroot a sid-python peer runs in ($SID_ROOT or /srv/sid-root); null for a peer on the host.</summary>
        public string? PeerChroot;
        public string? JsonOut;
    }

    public const string Usage = """
        dotnet <bench dll> --write-models [--models-dir /work/bench-models] [--shapes a,b] [--seed 1] [--hf-rope-scaling]
        dotnet <bench dll> --load-bench [--models-dir DIR] [--shapes a,b] [--dtype bf16,fp32] [--map] [--cold]
                           [--max-rss-gb 8] [--threads 2] [--no-peer] [--peer-chroot DIR|none] [--no-disk-read] [--json out.json]
          the peer (transformers from_pretrained, bench/peer_load.py) runs with $BENCH_PYTHON; a sid-python peer gets
          the models folder bind-mounted on its chroot's /mnt ($SID_ROOT or /srv/sid-root; needs root)
          shapes: qwen2.5-0.5b, llama-3.2-1b, llama-3.2-3b, llama-3.1-8b (public configs, random bf16 weights)
          --map      bf16 (the file's dtype) is loaded both ways: copied (MapWeights = false) and mapped (the default)
          --cold     evict the folder's files from the page cache (posix_fadvise DONTNEED) before each load
        """;

    public static Options Parse(string[] a)
    {
        var o = new Options();
        for (int i = 1; i < a.Length; i++)
        {
            string Next() => i + 1 < a.Length ? a[++i] : throw new ArgumentException($"{a[i]} needs a value");
            switch (a[i])
            {
                case "--models-dir": o.ModelsDir = Next(); break;
                case "--shapes": o.Shapes = Next().Split(',', StringSplitOptions.RemoveEmptyEntries); break;
                case "--dtype": o.DTypes = Next().Split(',', StringSplitOptions.RemoveEmptyEntries); break;
                case "--map": o.Map = true; break;
                case "--cold": o.Cold = true; break;
                case "--max-rss-gb": o.MaxRssGB = double.Parse(Next()); break;
                case "--threads": o.Threads = int.Parse(Next()); break;
                case "--seed": o.Seed = long.Parse(Next()); break;
                case "--no-peer": o.Peer = false; break;
                case "--peer-chroot": o.PeerChroot = Next() is var c && c != "none" ? c : null; break;
                case "--no-disk-read": o.DiskRead = false; break;
                case "--hf-rope-scaling": o.RopeScaling = true; break;
                case "--json": o.JsonOut = Next(); break;
                default: throw new ArgumentException($"unknown option {a[i]}\n{Usage}");
            }
        }
        if (!a.Contains("--peer-chroot")) o.PeerChroot = DefaultPeerChroot(o.PeerPython);
        if (!o.Peer) o.PeerPython = null;
        foreach (var s in o.Shapes) RealShapes.Find(s);
        foreach (var d in o.DTypes) if (d is not ("fp32" or "bf16")) throw new ArgumentException($"unknown dtype {d}");
        return o;
    }

    public static void WriteModels(Options o)
    {
        Directory.CreateDirectory(o.ModelsDir);
        foreach (var name in o.Shapes) RealShapes.Write(o.ModelsDir, RealShapes.Find(name), o.Seed, o.RopeScaling);
    }

    public static void Run(Options o)
    {
        string? peerPython = o.PeerPython;
        Console.WriteLine($"Load benchmark: {string.Join(", ", o.Shapes)} from {o.ModelsDir}; {o.Threads} threads; {(o.Cold ? "cold" : "warm")} page cache; " +
                          $"each load in its own process; load avg {LoadAvg()}");
        Console.WriteLine($"CPU: {CpuModel()}; RAM {MemTotalGB():F1} GB; flags: {string.Join(" ", CpuFlags())}");
        Console.WriteLine(peerPython == null ? "PyTorch peer: off (set BENCH_PYTHON, e.g. to ../shared/peer/sid-python)" : $"PyTorch peer: {peerPython}{(o.PeerChroot != null ? $" (chroot {o.PeerChroot})" : "")}");
        var results = new List<LoadResult>();
        foreach (var name in o.Shapes)
        {
            string dir = Path.Combine(o.ModelsDir, name);
            if (!File.Exists(Path.Combine(dir, "config.json"))) { Console.WriteLine($"{dir}: missing, write it with --write-models"); continue; }
            var files = CausalLMFactory.WeightFiles(dir);
            if (o.DiskRead) DiskRead(files);
            foreach (var dtype in o.DTypes)
                foreach (bool map in o.Map && dtype == "bf16" ? new[] { false, true } : [true])
                {
                    long bytes = ExpectedBytes(dir, dtype);
                    double expectGB = (1.15 * bytes + (300L << 20)) / 1e9;
                    string how = dtype == "bf16" ? (map ? " mapped" : " copied") : "";
                    if (expectGB > o.MaxRssGB)
                    {
                        Console.WriteLine($"{name} {dtype}{how}: skipped, expected peak {expectGB:F1} GB > --max-rss-gb {o.MaxRssGB}. Run it with:\n" +
                                          $"  dotnet {Environment.GetCommandLineArgs()[0]} --load-bench --models-dir {o.ModelsDir} --shapes {name} --dtype {dtype}{(dtype == "bf16" && !map ? " --map" : "")} --max-rss-gb {Math.Ceiling(expectGB * 1.3)}");
                        continue;
                    }
                    if (Child(o, dir, name, dtype, map) is LoadResult ours) { results.Add(ours); Print(ours); }
                    if (peerPython == null || !map) continue;
                    // transformers converting bf16 → fp32 peaked at 1.64× the fp32 model on Qwen2.5-0.5B (3.2 GB for 1.98 GB)
                    double peerGB = (dtype == "fp32" ? 1.7 * bytes + (500L << 20) : 0.2 * bytes + (500L << 20)) / 1e9;
                    if (peerGB > o.MaxRssGB)
                        Console.WriteLine($"{name} {dtype} pytorch: skipped, expected peak {peerGB:F1} GB > --max-rss-gb {o.MaxRssGB}");
                    else if (PeerRun(o, peerPython, name, dtype) is LoadResult theirs) { results.Add(theirs); Print(theirs); }
                }
        }
        Console.WriteLine($"load avg after: {LoadAvg()}");
        if (o.JsonOut != null)
        {
            File.WriteAllText(o.JsonOut, JsonSerializer.Serialize(new { cpu = CpuModel(), flags = CpuFlags(), loadavg = LoadAvg(), results }, new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {o.JsonOut}");
        }
    }

    static long ExpectedBytes(string dir, string dtype)
    {
        var entries = RealShapes.Entries(CausalLMConfig.Load(dir));
        return entries.Sum(e => e.ByteLength) * (dtype == "fp32" ? 2 : 1);
    }

    static void Print(LoadResult r) =>
        Console.WriteLine($"{r.Shape,-13} {r.Impl,-8} {r.DType,-4} {(r.Mapped ? "mapped" : "copied"),-6} | load {r.LoadSeconds,6:F2} s " +
                          $"({r.FileGB / r.LoadSeconds,5:F2} GB/s of file, cpu {r.LoadCpuSeconds:F2} s) + touch {r.TouchSeconds:F2} s | peak RSS {r.PeakRssMiB,7:F0} MiB (baseline {r.BaselineRssMiB:F0}; " +
                          $"target {r.TargetMiB:F0}: {(r.PeakRssMiB <= r.TargetMiB ? "met" : "MISSED")}) | after: anon {r.RssAnonMiB:F0} file {r.RssFileMiB:F0} | " +
                          $"model {r.ModelBytes / 1e9:F2} GB {r.Notes}");

    /// <summary>In the child: one load, measured.</summary>
    public static int ChildMain(string dir, string dtype, bool map, bool cold, int threads)
    {
        torch.set_num_threads(threads);
        _ = torch.zeros(1);
        var files = CausalLMFactory.WeightFiles(dir);
        if (cold) foreach (var f in files) Evict(f);
        double baseline = ProcStats.RssMiB();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        using var model = CausalLMFactory.LoadPretrained(dir, new ModelLoadOptions { DType = dtype == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32, MapWeights = map });
        double seconds = sw.Elapsed.TotalSeconds;
        double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
        double peak = ProcStats.PeakRssMiB(), after = ProcStats.RssMiB(), anon = Status("RssAnon:"), file = Status("RssFile:");
        double touch = Touch(model);
        long bytes = model.parameters().Sum(p => p.numel() * p.element_size());
        long parameters = model.parameters().Sum(p => p.numel());
        bool mapped = map && files.All(f => SafeTensors.ReadHeader(f).Tensors.Values.All(t => SafeTensors.ScalarTypeOf(t.DType) == model.ComputeDType));
        var r = new LoadResult("ours", Path.GetFileName(dir), dtype, mapped, cold, seconds, cpuSeconds, touch, peak, baseline, after,
            anon, file, bytes, parameters, files.Sum(f => new FileInfo(f).Length) / 1e9,
            $"threads {threads}{(Runtime.MetaConstruction.IsThreadLocal ? "" : ", meta fallback")}");
        Console.WriteLine("RESULT " + JsonSerializer.Serialize(r));
        return 0;
    }

    /// <summary>
    /// Seconds to read every weight once after the load (a max per parameter): what a mapped load defers to the first
    /// forward (pages read from the page cache, or the disk when cold). Measured after the peak RSS of the load.
    /// </summary>
    static double Touch(nn.Module model)
    {
        var sw = Stopwatch.StartNew();
        using (torch.no_grad())
            foreach (var p in model.parameters()) { using var m = p.max(); m.to_type(ScalarType.Float32).item<float>(); }
        return sw.Elapsed.TotalSeconds;
    }

    static LoadResult? Child(Options o, string dir, string shape, string dtype, bool map)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
        string entry = Environment.GetCommandLineArgs()[0];
        if (ChildProcess.NeedsEntryAssembly(entry)) psi.ArgumentList.Add(entry);
        foreach (var a in new[] { "--load-child", dir, dtype, map ? "map" : "copy", o.Cold ? "cold" : "warm", $"{o.Threads}" }) psi.ArgumentList.Add(a);
        return Collect(psi, $"ours {shape} {dtype}", o);
    }

    /// <summary>
    /// transformers' from_pretrained on the same folder (bench/peer_load.py). With a chroot peer (sid-python), the
    /// models folder is bind-mounted on the chroot's /mnt inside a private mount namespace (needs root).
    /// </summary>
    static LoadResult? PeerRun(Options o, string python, string shape, string dtype)
    {
        var psi = PeerProcess(python, o.PeerChroot, o.ModelsDir, FindScript("peer_load.py"), shape);
        foreach (var a in new[] { "--dtype", dtype, "--threads", $"{o.Threads}" }) psi.ArgumentList.Add(a);
        if (o.Cold) foreach (var f in CausalLMFactory.WeightFiles(Path.Combine(o.ModelsDir, shape))) Evict(f);
        psi.Environment["OMP_NUM_THREADS"] = $"{o.Threads}";
        return Collect(psi, $"pytorch {shape} {dtype}", o) is LoadResult r ? r with { Shape = shape, Cold = o.Cold } : null;
    }

    /// <summary>The chroot of a sid-python peer ($SID_ROOT, default /srv/sid-root); null for any other Python.</summary>
    internal static string? DefaultPeerChroot(string? python) =>
        python != null && Path.GetFileName(python) == "sid-python"
            ? Environment.GetEnvironmentVariable("SID_ROOT") is { Length: > 0 } r ? r : "/srv/sid-root"
            : null;

    /// <summary>`python script --model FOLDER`; with a chroot peer (sid-python) the models folder is bind-mounted on
    /// the chroot's /mnt inside a private mount namespace (needs root). Callers add their own arguments.</summary>
    internal static ProcessStartInfo PeerProcess(string python, string? chroot, string modelsDir, string script, string shape)
    {
        ProcessStartInfo psi;
        if (chroot != null)
        {
            psi = new ProcessStartInfo("unshare") { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in new[] { "--mount", "--propagation", "private", "sh", "-c", "mount --bind \"$1\" \"$2/mnt\" && shift 2 && exec \"$@\"", "sh",
                         Path.GetFullPath(modelsDir), chroot, python, script, "--model", $"/mnt/{shape}" })
                psi.ArgumentList.Add(a);
        }
        else
        {
            psi = new ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in new[] { script, "--model", Path.Combine(modelsDir, shape) }) psi.ArgumentList.Add(a);
        }
        return psi;
    }

    static LoadResult? Collect(ProcessStartInfo psi, string what, Options o)
    {
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        var line = stdout.Split('\n').FirstOrDefault(l => l.StartsWith("RESULT "));
        if (p.ExitCode != 0 || line == null)
        {
            Console.WriteLine($"  {what}: failed (exit {p.ExitCode}):\n{string.Join("\n", (err.Result + stdout).Split('\n').Where(l => l.Trim() != "").TakeLast(8))}");
            return null;
        }
        return JsonSerializer.Deserialize<LoadResult>(line["RESULT ".Length..], new JsonSerializerOptions { PropertyNameCaseInsensitive = true });
    }

    /// <summary>Sequential read speed of the files: cold (O_DIRECT, no page cache) with dd, then warm (page cache).</summary>
    static void DiskRead(IReadOnlyList<string> files)
    {
        double bytes = files.Sum(f => new FileInfo(f).Length);
        var sw = Stopwatch.StartNew();
        foreach (var f in files)
        {
            using var dd = Process.Start(new ProcessStartInfo("dd", ["if=" + f, "of=/dev/null", "bs=16M", "iflag=direct"]) { RedirectStandardError = true })!;
            dd.StandardError.ReadToEnd();
            dd.WaitForExit();
        }
        double direct = bytes / 1e9 / sw.Elapsed.TotalSeconds;
        var buf = new byte[16 << 20];
        sw.Restart();
        foreach (var f in files) { using var fs = File.OpenRead(f); while (fs.Read(buf) > 0) { } }
        double first = bytes / 1e9 / sw.Elapsed.TotalSeconds;
        sw.Restart();
        foreach (var f in files) { using var fs = File.OpenRead(f); while (fs.Read(buf) > 0) { } }
        double second = bytes / 1e9 / sw.Elapsed.TotalSeconds;
        Console.WriteLine($"  disk read of {bytes / 1e9:F2} GB: O_DIRECT (dd, bs 16M) {direct:F2} GB/s; buffered {first:F2} GB/s, again (page cache) {second:F2} GB/s");
    }

    [DllImport("libc", SetLastError = true)]
    static extern int posix_fadvise(int fd, long offset, long len, int advice);

    /// <summary>Drops the file's clean, unmapped pages from the page cache (POSIX_FADV_DONTNEED = 4).</summary>
    static void Evict(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        posix_fadvise((int)fs.SafeFileHandle.DangerousGetHandle(), 0, 0, 4);
    }

    static long Status(string key)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key)) return long.Parse(line[key.Length..].Trim().Split(' ')[0]) / 1024;
        return -1;
    }

    internal static string FindScript(string name)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "bench", name))) return Path.Combine(d.FullName, "bench", name);
        throw new FileNotFoundException($"bench/{name} not found above {AppContext.BaseDirectory}");
    }

    internal static string LoadAvg() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";
    internal static string CpuModel() => File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "?";
    internal static double MemTotalGB() => long.Parse(File.ReadLines("/proc/meminfo").First().Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024 / 1e9;

    /// <summary>The CPU flags that matter for the dtype choice and GEMM speed.</summary>
    public static string[] CpuFlags()
    {
        var all = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags"))?.Split(':', 2)[1].Split(' ', StringSplitOptions.RemoveEmptyEntries) ?? [];
        string[] keep = ["avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8", "avx_vnni"];
        return keep.Where(all.Contains).ToArray();
    }
}
