using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ML.Finetune.Bench;
using ML.Finetune.Runtime;
using TorchSharp;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
var json = new JsonSerializerOptions { WriteIndented = false };

if (args.Length > 0 && args[0] == "--child")
{
    // --child MODE DTYPE SETTINGS_JSON: one mode in this process, so VmHWM and faults are per mode.
    var s = JsonSerializer.Deserialize<BenchSettings>(args[3])!;
    if (Environment.GetEnvironmentVariable("BENCH_FP32_MATMUL") == "bf16" && !TorchCpuMath.TrySetFloat32MatmulBf16(true))
        throw new InvalidOperationException("could not switch float32 matmul to bf16");
    if (args[1] == "matmul-probe") { MatmulProbe.Run(s.Threads); return 0; }
    var r = Workloads.Run(args[1], args[2], s); // applies MallocTuning after building the model, as FinetuneTrainer.Train does
    bool malloc = MallocTuning.IsApplied;
    r = r with { Notes = (r.Notes + (malloc ? "" : $" [malloc tuning off: {MallocTuning.SkipReason}]")).Trim() };
    Console.WriteLine("RESULT " + JsonSerializer.Serialize(r, json));
    return 0;
}

if (args.Length > 0 && args[0] == "--tokenizer") return TokenizerBench.Run(args);
if (args.Length > 0 && args[0] == "--packing") return PackingBench.Run(args);
if (args.Length > 0 && args[0] == "--data-parallel") return DataParallelProbe.Parent(args);
if (args.Length > 1 && args[0] == "--dp-child") return DataParallelProbe.ChildRun(args[1]); // one rank (or alone), started by --data-parallel
if (args.Length > 0 && args[0] == "--load-child")
    return LoadBench.ChildMain(args[1], args[2], args[3] == "map", args[4] == "cold", int.Parse(args[5]));
if (args.Length > 0 && args[0] == "--write-models") { LoadBench.WriteModels(LoadBench.Parse(args)); return 0; }
if (args.Length > 0 && args[0] == "--load-bench") { LoadBench.Run(LoadBench.Parse(args)); return 0; }
if (args.Length > 0 && args[0] == "--train-bench") { TrainBench.Run(TrainBench.Parse(args)); return 0; }
if (args.Length > 1 && args[0] == "--train-child") return TrainBench.ChildMain(args[1]);
if (args.Length > 0 && args[0] == "--kl-probe") { KlProbe.Run(KlProbe.Parse(args)); return 0; }
if (args.Length > 1 && args[0] == "--kl-child") return KlProbe.ChildMain(args[1]);
if (args.Length > 0 && args[0] == "--kl-topk-error") return TopKErrorProbe.Run(args);
if (args.Length > 0 && args[0] == "--gemm-shapes") { GemmShapesProbe.Run(2); return 0; }
if (args.Length > 0 && args[0] == "--matmul-probe") { MatmulProbe.Run(2); return 0; }
if (args.Length > 0 && args[0] == "--rss-probe") { RssProbe.Run(2, args.Length > 1 ? int.Parse(args[1]) : 2000); return 0; }
if (args.Length > 0 && args[0] == "--kernel-probe") { KernelProbe.Run(2); return 0; }
if (args.Length > 0 && args[0] == "--optimizer-probe") { OptimizerProbe.Run(2, args.Length > 1 ? int.Parse(args[1]) : 12); return 0; }
var opt = Options.Parse(args);
if (opt.Help) { Console.WriteLine(Options.Usage); return 0; }
Console.WriteLine($"ML.Finetune.Bench: GPT-2-small shape ({opt.Settings.Layers} layers, d=768, 12 heads, vocab 50257), " +
                  $"batch {opt.Settings.Batch}, seq {opt.Settings.Seq}, {opt.Settings.Threads} threads; median of {opt.Settings.Steps} " +
                  $"after {opt.Settings.Warmup} warm-ups (generation: {opt.Settings.GenSteps} after {opt.Settings.GenWarmup}); " +
                  $"malloc tuning {(opt.Malloc ? "on" : "off")}; each mode in its own process.");
Console.WriteLine($"TorchSharp {typeof(torch).Assembly.GetName().Version}, {Environment.ProcessorCount} CPUs, load avg {LoadAvg()}");
Console.WriteLine($"CPU: {LoadBench.CpuModel()}; flags: {string.Join(" ", LoadBench.CpuFlags())}");
if (opt.Isa != null)
    Console.WriteLine($"Kernels capped to {opt.Isa.ToUpperInvariant()} on both sides (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA; the peer also OPENBLAS_CORETYPE=Haswell): " +
                      "the code paths an AVX2-only CPU runs, on this CPU's cores and caches.");

string? peer = opt.Peer ? Peer.Find() : null;
string? peerProblem = opt.Peer ? Peer.Check(peer) : "disabled (--no-peer)";
if (peerProblem != null) Console.WriteLine($"PyTorch peer: {peerProblem}");
else Console.WriteLine($"PyTorch peer: {peer} (torch {Peer.TorchVersion()})");
Console.WriteLine("Machine is shared: figures are medians, but absolute numbers move with the load average; compare columns of one run.");

var results = new List<BenchResult>();
foreach (var mode in opt.Modes)
    foreach (var dtype in opt.DTypes)
    {
        var ours = Child.RunOurs(mode, dtype, opt);
        BenchResult? theirs = peerProblem == null ? Child.RunPeer(peer!, mode, dtype, opt) : null;
        if (ours != null) results.Add(ours);
        if (theirs != null) results.Add(theirs);
        Report.Row(mode, dtype, ours, theirs);
    }
Console.WriteLine($"load avg after: {LoadAvg()}");
if (opt.JsonOut != null)
{
    File.WriteAllText(opt.JsonOut, JsonSerializer.Serialize(new { settings = opt.Settings, malloc = opt.Malloc, loadavg = LoadAvg(), results },
        new JsonSerializerOptions { WriteIndented = true }));
    Console.WriteLine($"wrote {opt.JsonOut}");
}
return 0;

static string LoadAvg() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

sealed class Options
{
    public BenchSettings Settings = new();
    public string[] Modes = Workloads.AllModes;
    public string[] DTypes = ["fp32", "bf16"];
    public string? JsonOut;
    public bool Peer = true, Malloc = true, Help;
    public string? MatmulPrecision;
    /// <summary>"avx2": both sides' children run with their CPU kernels capped to AVX2.</summary>
    public string? Isa;
    public int TimeoutS = 1800;

    public const string Usage = """
        dotnet run -c Release --project bench/ML.Finetune.Bench -- [options]
          --modes a,b,...     forward,full,lora,lora-all,prompt,prefix,gen-cache,gen-nocache (default: all)
          --dtype fp32,bf16   compute paths (default: both)
          --steps N           measured steps per mode (median; default 5)   --warmup N (default 3)
          --gen-steps N       measured generations (default 5)              --gen-warmup N (default 3)
          --gen-new N         new tokens per generation (default 128; prompt 16, batch 1)
          --layers N          transformer layers (default 12)   --batch N (4)   --seq N (128)   --threads N (2)
          --no-peer           skip the Python PyTorch peer (bench/peer_pytorch.py)
          --no-malloc-tuning  run children with MLFINETUNE_MALLOC_TUNING=0 (the peer gets the same malloc setting)
          --fp32-matmul ieee|bf16  float32 matmul precision in our children (TorchCpuMath; default ieee)
          --tensor-op-optimizer    our AdamW in its per-tensor torch-op form instead of the fused CPU pass
          --checkpointing     activation checkpointing per layer in our training modes (CausalLM.GradientCheckpointing)
          --completion N      SFT-shaped training: the loss on the last N positions of each sequence only (the rest is
                              prompt, label -100), on both sides; default 0 = every position
          --full-logits       our loss from full [B,T,V] logits (the path before the chunked head) instead of the chunked head
          --isa avx2          cap both sides' kernels (ATen, MKL, oneDNN) to AVX2, as on a CPU without AVX-512/bf16
          --json FILE         write all results as JSON
        """;

    public static Options Parse(string[] a)
    {
        var o = new Options();
        var s = o.Settings;
        for (int i = 0; i < a.Length; i++)
        {
            string Next() => i + 1 < a.Length ? a[++i] : throw new ArgumentException($"{a[i]} needs a value");
            int Int() => int.Parse(Next());
            switch (a[i])
            {
                case "--modes": o.Modes = Next().Split(',', StringSplitOptions.RemoveEmptyEntries); break;
                case "--dtype": o.DTypes = Next().Split(',', StringSplitOptions.RemoveEmptyEntries); break;
                case "--steps": s = s with { Steps = Int() }; break;
                case "--warmup": s = s with { Warmup = Int() }; break;
                case "--gen-steps": s = s with { GenSteps = Int() }; break;
                case "--gen-warmup": s = s with { GenWarmup = Int() }; break;
                case "--layers": s = s with { Layers = Int() }; break;
                case "--gen-new": s = s with { GenNew = Int() }; break;
                case "--batch": s = s with { Batch = Int() }; break;
                case "--seq": s = s with { Seq = Int() }; break;
                case "--threads": s = s with { Threads = Int() }; break;
                case "--json": o.JsonOut = Next(); break;
                case "--isa": o.Isa = Next().ToLowerInvariant() is "avx2" ? "avx2" : throw new ArgumentException("--isa takes avx2"); break;
                case "--no-peer": o.Peer = false; break;
                case "--no-malloc-tuning": o.Malloc = false; break;
                case "--tensor-op-optimizer": s = s with { FusedOptimizer = false }; break;
                case "--checkpointing": s = s with { Checkpointing = true }; break;
                case "--full-logits": s = s with { FullLogits = true }; break;
                case "--completion": s = s with { Completion = Int() }; break;
                case "--fp32-matmul": o.MatmulPrecision = Next(); break;
                case "-h": case "--help": case "-help": o.Help = true; break;
                default: throw new ArgumentException($"unknown option {a[i]}\n{Usage}");
            }
        }
        foreach (var m in o.Modes) if (!Workloads.AllModes.Contains(m)) throw new ArgumentException($"unknown mode {m}");
        foreach (var d in o.DTypes) if (d is not ("fp32" or "bf16")) throw new ArgumentException($"unknown dtype {d}");
        o.Settings = s;
        return o;
    }
}

static class Child
{
    public static BenchResult? RunOurs(string mode, string dtype, Options o)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
        string? entry = Environment.GetCommandLineArgs()[0];
        if (ChildProcess.NeedsEntryAssembly(entry)) psi.ArgumentList.Add(entry); // run through `dotnet x.dll`
        foreach (var a in new[] { "--child", mode, dtype, JsonSerializer.Serialize(o.Settings) }) psi.ArgumentList.Add(a);
        Env(psi, o);
        if (o.MatmulPrecision != null) psi.Environment["BENCH_FP32_MATMUL"] = o.MatmulPrecision;
        return Collect(psi, "ours", mode, dtype, o);
    }

    public static BenchResult? RunPeer(string script, string mode, string dtype, Options o)
    {
        var s = o.Settings;
        var psi = new ProcessStartInfo(Peer.Python) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { script, "--mode", mode, "--dtype", dtype, "--layers", $"{s.Layers}", "--batch", $"{s.Batch}",
                     "--seq", $"{s.Seq}", "--threads", $"{s.Threads}", "--steps", $"{s.Steps}", "--warmup", $"{s.Warmup}",
                     "--gen-steps", $"{s.GenSteps}", "--gen-warmup", $"{s.GenWarmup}", "--gen-prompt", $"{s.GenPrompt}",
                     "--gen-new", $"{s.GenNew}", "--gen-batch", $"{s.GenBatch}", "--lora-rank", $"{s.LoraRank}",
                     "--lora-alpha", $"{s.LoraAlpha}", "--virtual-tokens", $"{s.VirtualTokens}", "--seed", $"{s.Seed}", "--completion", $"{s.Completion}" })
            psi.ArgumentList.Add(a);
        if (o.Isa != null) { psi.ArgumentList.Add("--isa"); psi.ArgumentList.Add(o.Isa); }
        Env(psi, o);
        // Same malloc settings as our children (PyTorch has no mallopt call of its own): GLIBC_TUNABLES at start.
        if (o.Malloc)
            psi.Environment["GLIBC_TUNABLES"] = ChildProcess.PeerMallocTunables();
        return Collect(psi, "pytorch", mode, dtype, o);
    }

    static void Env(ProcessStartInfo psi, Options o)
    {
        psi.Environment["MLFINETUNE_MALLOC_TUNING"] = o.Malloc ? "1" : "0";
        psi.Environment["OMP_NUM_THREADS"] = $"{o.Settings.Threads}";
        psi.Environment["MKL_NUM_THREADS"] = $"{o.Settings.Threads}";
        psi.Environment["OPENBLAS_NUM_THREADS"] = $"{o.Settings.Threads}";
        if (o.Isa == "avx2")
        {
            psi.Environment["ATEN_CPU_CAPABILITY"] = "avx2";   // ATen's vectorized kernels (default: the best the CPU has)
            psi.Environment["MKL_ENABLE_INSTRUCTIONS"] = "AVX2"; // MKL's GEMM code path
            psi.Environment["ONEDNN_MAX_CPU_ISA"] = "AVX2";     // oneDNN (bf16 paths, some convolutions/matmuls)
            psi.Environment["DNNL_MAX_CPU_ISA"] = "AVX2";
        }
    }

    static BenchResult? Collect(ProcessStartInfo psi, string impl, string mode, string dtype, Options o)
    {
        using var p = Process.Start(psi)!;
        var errTask = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(o.TimeoutS * 1000)) { p.Kill(); Console.WriteLine($"  {impl} {mode} {dtype}: timed out"); return null; }
        string err = errTask.Result;
        var line = stdout.Split('\n').FirstOrDefault(l => l.StartsWith("RESULT "));
        if (p.ExitCode != 0 || line == null)
        {
            var tail = string.Join("\n", (err + stdout).Split('\n').Where(l => l.Trim() != "").TakeLast(6));
            Console.WriteLine($"  {impl} {mode} {dtype}: failed (exit {p.ExitCode}):\n{tail}");
            return null;
        }
        return JsonSerializer.Deserialize<BenchResult>(line["RESULT ".Length..], new JsonSerializerOptions { PropertyNameCaseInsensitive = true });
    }
}

static class Peer
{
    public static string? Find()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            var f = Path.Combine(d.FullName, "bench", "peer_pytorch.py");
            if (File.Exists(f)) return f;
        }
        return null;
    }

    public static string? Check(string? script)
    {
        if (script == null) return "missing: bench/peer_pytorch.py not found above " + AppContext.BaseDirectory;
        return TorchVersion() == null
            ? "missing: `python3 -c \"import torch\"` fails. Install it with `sudo apt-get install -y python3-torch` " +
              "(Debian 12: PyTorch 1.13.1, CPU), see bench/README.md; comparing against nothing."
            : null;
    }

    static string? _version; static bool _checked;

    /// <summary>The first of $BENCH_PYTHON, python3 (PATH), /usr/bin/python3 that can import torch (a pyenv
    /// python3 on PATH does not see Debian's python3-torch).</summary>
    public static string Python { get; private set; } = "python3";

    public static string? TorchVersion()
    {
        if (_checked) return _version;
        _checked = true;
        var candidates = new[] { Environment.GetEnvironmentVariable("BENCH_PYTHON"), "python3", "/usr/bin/python3" };
        foreach (var py in candidates.Where(c => !string.IsNullOrEmpty(c)).Distinct())
        {
            try
            {
                var psi = new ProcessStartInfo(py!, ["-c", "import torch; print(torch.__version__)"]) { RedirectStandardOutput = true, RedirectStandardError = true };
                using var p = Process.Start(psi)!;
                string o = p.StandardOutput.ReadToEnd().Trim();
                p.StandardError.ReadToEnd();
                p.WaitForExit();
                if (p.ExitCode == 0) { Python = py!; return _version = o + $" via {py}"; }
            }
            catch (Exception) { }
        }
        return null;
    }
}

static class Report
{
    static bool _header;
    public static void Row(string mode, string dtype, BenchResult? ours, BenchResult? theirs)
    {
        if (!_header)
        {
            Console.WriteLine($"{"mode",-12} {"dtype",-5} | {"ours tok/s",10} {"PyT tok/s",10} {"ours/PyT",8} | {"ours ms",9} {"PyT ms",9} | {"RSS MiB",8} {"PyT RSS",8} | {"flt/step",9} {"PyT flt",9} | {"trainable",10} {"PyT train",10}");
            _header = true;
        }
        string F(double? v, string f) => v is double d && d >= 0 ? d.ToString(f) : "-";
        double? ratio = ours != null && theirs != null ? ours.TokensPerSec / theirs.TokensPerSec : null;
        Console.WriteLine($"{mode,-12} {dtype,-5} | {F(ours?.TokensPerSec, "F1"),10} {F(theirs?.TokensPerSec, "F1"),10} {F(ratio, "F2"),8} | " +
                          $"{F(ours?.MedianMs, "F0"),9} {F(theirs?.MedianMs, "F0"),9} | {F(ours?.PeakRssMiB, "F0"),8} {F(theirs?.PeakRssMiB, "F0"),8} | " +
                          $"{F(ours?.FaultsPerStep, "F0"),9} {F(theirs?.FaultsPerStep, "F0"),9} | {ours?.TrainableParams,10} {theirs?.TrainableParams,10}");
    }
}
