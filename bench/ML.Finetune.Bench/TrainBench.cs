using System.Diagnostics;
using System.Text.Json;
using ML.Finetune.Adapters;
using ML.Finetune.Estimators;
using ML.Finetune.Models;
using ML.Finetune.Runtime;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

public sealed record TrainRunSettings(
    string Folder, string Shape, string Mode, string DType, int Batch, int Seq, int Completion, int Steps, int Warmup,
    bool Checkpointing, int Threads, int LoraRank, string[]? LoraTargets, long Seed);

public sealed record TrainResult(
    string Shape, string Mode, string DType, int Batch, int Seq, int Completion, bool Checkpointing, double LoadSeconds,
    double FirstStepSeconds, double MedianStepSeconds, double[] StepSeconds, double TokensPerSec, double PeakRssMiB,
    double PeakAnonMiB, double PeakFileMiB, long TrainableParams, long Parameters, double LastLoss, string Notes);

/// <summary>
/// Training steps on the real shapes (<see cref="RealShapes"/> folders): the library's own loop
/// (<see cref="FinetuneTrainer"/>: chunked head loss, AdamW, malloc tuning, optional activation checkpointing) on random
/// token batches, LoRA (the family's PEFT default targets) or full finetuning, each run in its own child process.
/// Reported: load time, first step (includes reading mapped weights from disk), median of the measured steps, tokens/s
/// (batch × seq / median step), peak RSS (VmHWM) and the peaks of its anonymous and file-backed parts (sampled every
/// 50 ms; file-backed = the memory-mapped bf16 weights, page cache the kernel can drop and re-read).
/// </summary>
static class TrainBench
{
    public sealed class Options
    {
        public string ModelsDir = "/work/bench-models";
        public string[] Shapes = ["qwen2.5-0.5b"];
        public string[] Modes = ["lora"];
        public string DType = "auto";
        public int Batch = 1, Seq = 512, Completion, Steps = 3, Warmup = 1, Threads = 2, LoraRank = 8;
        public string[]? LoraTargets;
        public bool[] Checkpointing = [false];
        public double MaxRssGB = 6;
        public long Seed = 1;
        public string? JsonOut;
        /// <summary>HF transformers + PEFT (bench/peer_train.py) after each of our runs, same settings.</summary>
        public bool Peer;
        public string? PeerPython = Environment.GetEnvironmentVariable("BENCH_PYTHON") is { Length: > 0 } p ? p : null;
        public string? PeerChroot;
    }

    public const string Usage = """
        dotnet <bench dll> --train-bench [--models-dir /work/bench-models] [--shapes qwen2.5-0.5b,llama-3.2-1b] [--modes lora,full]
                           [--seq 512] [--batch 1] [--completion N] [--steps 3] [--warmup 1] [--dtype auto|bf16|fp32]
                           [--checkpointing off|on|both] [--lora-rank 8] [--lora-targets q_proj,v_proj|all-linear]
                           [--threads 2] [--max-rss-gb 6] [--peer] [--peer-chroot DIR|none] [--json out.json]
          --peer           after each run, HF transformers + PEFT on the same folder and settings (bench/peer_train.py,
                           with $BENCH_PYTHON, e.g. ../shared/peer/sid-python; its chroot gets the models folder on /mnt)
          --completion N   only the last N tokens of each row carry labels (SFT-shaped); 0 (default) = every token
          --max-rss-gb     skip runs whose estimated anonymous memory is above this (printing the command that runs them)
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
                case "--modes": o.Modes = Next().Split(',', StringSplitOptions.RemoveEmptyEntries); break;
                case "--dtype": o.DType = Next(); break;
                case "--seq": o.Seq = int.Parse(Next()); break;
                case "--batch": o.Batch = int.Parse(Next()); break;
                case "--completion": o.Completion = int.Parse(Next()); break;
                case "--steps": o.Steps = int.Parse(Next()); break;
                case "--warmup": o.Warmup = int.Parse(Next()); break;
                case "--threads": o.Threads = int.Parse(Next()); break;
                case "--lora-rank": o.LoraRank = int.Parse(Next()); break;
                case "--lora-targets": o.LoraTargets = Next().Split(',', StringSplitOptions.RemoveEmptyEntries); break;
                case "--checkpointing": o.Checkpointing = Next() switch { "on" => [true], "off" => [false], "both" => [false, true], var v => throw new ArgumentException($"--checkpointing {v}: on, off or both") }; break;
                case "--max-rss-gb": o.MaxRssGB = double.Parse(Next()); break;
                case "--seed": o.Seed = long.Parse(Next()); break;
                case "--json": o.JsonOut = Next(); break;
                case "--peer": o.Peer = true; break;
                case "--peer-chroot": o.PeerChroot = Next() is var c && c != "none" ? c : null; break;
                default: throw new ArgumentException($"unknown option {a[i]}\n{Usage}");
            }
        }
        if (o.Peer && o.PeerPython == null) throw new ArgumentException("--peer needs BENCH_PYTHON (e.g. ../shared/peer/sid-python)");
        if (!a.Contains("--peer-chroot")) o.PeerChroot = LoadBench.DefaultPeerChroot(o.PeerPython);
        foreach (var s in o.Shapes) RealShapes.Find(s);
        foreach (var m in o.Modes) if (m is not ("lora" or "full")) throw new ArgumentException($"unknown mode {m} (lora, full)");
        if (o.DType is not ("auto" or "bf16" or "fp32")) throw new ArgumentException($"unknown dtype {o.DType}");
        if (o.Steps < 1 || o.Seq < 2 || o.Batch < 1 || o.Completion < 0 || o.Completion >= o.Seq) throw new ArgumentException("bad --steps/--seq/--batch/--completion");
        return o;
    }

    public static void Run(Options o)
    {
        Console.WriteLine($"Training steps on real shapes: {string.Join(", ", o.Shapes)} from {o.ModelsDir}; batch {o.Batch} x seq {o.Seq}" +
                          $"{(o.Completion > 0 ? $", labels on the last {o.Completion} tokens" : ", every token a target")}; {o.Threads} threads; " +
                          $"median of {o.Steps} after {o.Warmup} warm-up; each run in its own process; load avg {LoadBench.LoadAvg()}");
        Console.WriteLine($"CPU: {LoadBench.CpuModel()}; RAM {LoadBench.MemTotalGB():F1} GB; flags: {string.Join(" ", LoadBench.CpuFlags())}");
        var results = new List<TrainResult>();
        foreach (var shape in o.Shapes)
        {
            string dir = Path.Combine(o.ModelsDir, shape);
            if (!File.Exists(Path.Combine(dir, "config.json"))) { Console.WriteLine($"{dir}: missing, write it with --write-models --shapes {shape}"); continue; }
            var config = CausalLMConfig.Load(dir);
            foreach (var mode in o.Modes)
                foreach (bool ck in o.Checkpointing)
                {
                    string dtype = ResolveDType(o.DType);
                    double estimate = EstimateAnonGB(config, mode, dtype, o.Batch, o.Seq, ck);
                    if (estimate > o.MaxRssGB)
                    {
                        Console.WriteLine($"{shape} {mode}{(ck ? " +ckpt" : "")}: skipped, estimated anonymous memory {estimate:F1} GB > --max-rss-gb {o.MaxRssGB}. Run it with:\n" +
                                          $"  dotnet {Environment.GetCommandLineArgs()[0]} --train-bench --shapes {shape} --modes {mode} --seq {o.Seq} --batch {o.Batch} " +
                                          $"--checkpointing {(ck ? "on" : "off")} --dtype {o.DType} --max-rss-gb {Math.Ceiling(estimate * 1.3)}");
                        continue;
                    }
                    var s = new TrainRunSettings(dir, shape, mode, dtype, o.Batch, o.Seq, o.Completion, o.Steps, o.Warmup, ck, o.Threads, o.LoraRank, o.LoraTargets, o.Seed);
                    Console.WriteLine($"{shape} {mode}{(ck ? " +ckpt" : "")}: estimated anonymous memory {estimate:F1} GB; running ...");
                    if (Child(s) is TrainResult r) { results.Add(r); Print(r); }
                    if (o.Peer && PeerRun(o, s) is TrainResult pr) { results.Add(pr); Print(pr, "HF+PEFT"); }
                }
        }
        Console.WriteLine($"load avg after: {LoadBench.LoadAvg()}");
        if (o.JsonOut != null)
        {
            File.WriteAllText(o.JsonOut, JsonSerializer.Serialize(new { cpu = LoadBench.CpuModel(), flags = LoadBench.CpuFlags(), loadavg = LoadBench.LoadAvg(), results },
                new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {o.JsonOut}");
        }
    }

    static string ResolveDType(string d) => d != "auto" ? d
        : AutoDType.Resolve(FinetuneDType.Auto, torch.CPU).DType == ScalarType.BFloat16 ? "bf16" : "fp32";

    /// <summary>
    /// A rough upper estimate of the anonymous memory of a run (weights mapped from the file are not counted): full
    /// finetuning holds per parameter the written weights, their gradient, AdamW's m and v (and fp32 masters over bf16
    /// weights) and, unless it is mapped from the file, θ_p; activations per layer ≈ B·T·(16·d + 6·intermediate) elements plus, below 1,024 keys in bf16
    /// (eager attention), three [heads, T, T] float32 score tensors; with checkpointing one layer's worth plus each
    /// layer's input.
    /// </summary>
    static double EstimateAnonGB(CausalLMConfig c, string mode, string dtype, int b, int t, bool checkpointing)
    {
        long parameters = RealShapes.Entries(c).Sum(e => e.ByteLength / 2);
        double bytes = dtype == "bf16" ? 2 : 4;
        // bf16: θ_p is a second mapping of the bf16 file (page cache), not anonymous; fp32: a converted copy.
        double state = mode == "full" ? parameters * (dtype == "bf16" ? 2 + 2 + 4 + 8 : 4 + 4 + 8 + 4) : 0;
        if (dtype == "fp32" && mode == "lora") state += parameters * 4.0; // converted weights are anonymous copies
        double perLayer = (double)b * t * (16.0 * c.HiddenSize + 6.0 * c.IntermediateSize) * bytes
                          + (dtype == "bf16" && t < 1024 ? 3.0 * b * c.NumHeads * t * t * 4 : 0);
        double activations = checkpointing ? perLayer + (double)c.NumLayers * b * t * c.HiddenSize * bytes : perLayer * c.NumLayers;
        double head = Math.Min((double)b * t, ChunkedHead.DefaultChunkElements / (double)c.VocabSize) * c.VocabSize * 4 * 4;
        return (state + activations + head) / 1e9 + 0.5;
    }

    static void Print(TrainResult r, string impl = "ours") =>
        Console.WriteLine($"{impl,-7} {r.Shape,-13} {r.Mode,-4} {r.DType,-4} B={r.Batch} T={r.Seq}{(r.Checkpointing ? " ckpt" : "")} | load {r.LoadSeconds:F1} s, " +
                          $"1st step {r.FirstStepSeconds:F1} s, median step {r.MedianStepSeconds:F2} s = {r.TokensPerSec:F1} tok/s | peak RSS {r.PeakRssMiB:F0} MiB " +
                          $"(anon {r.PeakAnonMiB:F0}, file {r.PeakFileMiB:F0}) | trainable {r.TrainableParams:N0} of {r.Parameters:N0} | loss {r.LastLoss:F4} | {r.Notes}");

    static TrainResult? Child(TrainRunSettings s)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
        string entry = Environment.GetCommandLineArgs()[0];
        if (ChildProcess.NeedsEntryAssembly(entry)) psi.ArgumentList.Add(entry);
        psi.ArgumentList.Add("--train-child");
        psi.ArgumentList.Add(JsonSerializer.Serialize(s));
        return Collect(psi);
    }

    /// <summary>bench/peer_train.py (HF transformers + PEFT) with the run's settings; the same malloc tuning.</summary>
    static TrainResult? PeerRun(Options o, TrainRunSettings s)
    {
        var psi = LoadBench.PeerProcess(o.PeerPython!, o.PeerChroot, o.ModelsDir, LoadBench.FindScript("peer_train.py"), s.Shape);
        foreach (var a in new[] { "--shape", s.Shape, "--mode", s.Mode, "--dtype", s.DType, "--batch", $"{s.Batch}", "--seq", $"{s.Seq}",
                     "--completion", $"{s.Completion}", "--steps", $"{s.Steps}", "--warmup", $"{s.Warmup}", "--threads", $"{s.Threads}",
                     "--lora-rank", $"{s.LoraRank}", "--seed", $"{s.Seed}",
                     "--lora-targets", s.LoraTargets is { } t ? string.Join(",", t) : string.Join(",", LoraMethod.DefaultTargetModules(CausalLMConfig.Load(s.Folder))) })
            psi.ArgumentList.Add(a);
        if (s.Checkpointing) psi.ArgumentList.Add("--checkpointing");
        psi.Environment["OMP_NUM_THREADS"] = $"{s.Threads}";
        psi.Environment["GLIBC_TUNABLES"] = ChildProcess.PeerMallocTunables();
        Console.WriteLine($"  HF+PEFT {s.Shape} {s.Mode}{(s.Checkpointing ? " +ckpt" : "")}: running ...");
        return Collect(psi);
    }

    static TrainResult? Collect(ProcessStartInfo psi)
    {
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var lines = new List<string>();
        string? line;
        while ((line = p.StandardOutput.ReadLine()) != null)
        {
            if (line.StartsWith("STEP ")) Console.WriteLine("    " + line);
            lines.Add(line);
        }
        p.WaitForExit();
        var result = lines.FirstOrDefault(l => l.StartsWith("RESULT "));
        if (p.ExitCode != 0 || result == null)
        {
            Console.WriteLine($"  failed (exit {p.ExitCode}):\n{string.Join("\n", (err.Result + string.Join("\n", lines)).Split('\n').Where(l => l.Trim() != "").TakeLast(12))}");
            return null;
        }
        return JsonSerializer.Deserialize<TrainResult>(result["RESULT ".Length..]);
    }

    /// <summary>In the child: load, attach, train Warmup + Steps steps through the library's trainer, report.</summary>
    public static int ChildMain(string json)
    {
        var s = JsonSerializer.Deserialize<TrainRunSettings>(json)!;
        torch.set_num_threads(s.Threads);
        using var sampler = new MemorySampler();
        var dtype = s.DType == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;
        var sw = Stopwatch.StartNew();
        using var model = CausalLMFactory.LoadPretrained(s.Folder, new ModelLoadOptions { DType = dtype });
        double load = sw.Elapsed.TotalSeconds;
        IFinetuneMethod method = s.Mode == "full" ? new FullFinetuneMethod()
            : new LoraMethod(new LoraConfig { Rank = s.LoraRank, Alpha = 2 * s.LoraRank, TargetModules = s.LoraTargets });
        method.Attach(model, s.Seed);
        var data = RandomBatches(model.Config.VocabSize, (s.Warmup + s.Steps) * s.Batch, s.Seq, s.Completion, s.Seed);
        var trainer = new FinetuneTrainer(new TrainerOptions
        {
            LearningRate = s.Mode == "full" ? 1e-5 : 1e-4, BatchSize = s.Batch, MaxSteps = s.Warmup + s.Steps, Shuffle = false,
            GradientClipNorm = 1.0, GradientCheckpointing = s.Checkpointing, Seed = s.Seed,
        }, padId: 0);
        var stepSeconds = new List<double>();
        double lastLoss = double.NaN;
        sw.Restart();
        trainer.Progress = p =>
        {
            stepSeconds.Add(sw.Elapsed.TotalSeconds);
            lastLoss = p.Record.TrainLoss;
            Console.WriteLine($"STEP {p.Record.Step + 1}/{p.TotalSteps}: {stepSeconds[^1]:F2} s, loss {lastLoss:F4}, RSS {ProcStats.RssMiB():F0} MiB");
            sw.Restart();
        };
        trainer.Train(model, method, data);
        var measured = stepSeconds.Skip(s.Warmup).ToArray();
        double median = Workloads.Median(measured);
        var (anon, file) = sampler.Stop();
        long trainable = method.TrainableParameters.Sum(p => p.Parameter.numel());
        long parameters = model.parameters().Sum(p => p.numel());
        var r = new TrainResult(s.Shape, s.Mode, s.DType, s.Batch, s.Seq, s.Completion, s.Checkpointing, load, stepSeconds[0], median, measured,
            (double)s.Batch * s.Seq / median, ProcStats.PeakRssMiB(), anon, file, trainable, parameters, lastLoss,
            $"{(s.Mode == "lora" ? $"LoRA r={s.LoraRank} on {string.Join(",", s.LoraTargets ?? LoraMethod.DefaultTargetModules(model.Config))}" : "full, AdamW")}; " +
            $"threads {s.Threads}; {(MallocTuning.IsApplied ? "malloc tuning" : "no malloc tuning")}");
        (method as IDisposable)?.Dispose();
        Console.WriteLine("RESULT " + JsonSerializer.Serialize(r));
        return 0;
    }

    /// <summary>Random token rows of length <paramref name="seq"/>; labels on every token or on the last <paramref name="completion"/>.</summary>
    static List<EncodedExample> RandomBatches(long vocab, int rows, int seq, int completion, long seed)
    {
        var r = new Random((int)seed);
        var list = new List<EncodedExample>();
        for (int i = 0; i < rows; i++)
        {
            var ids = Enumerable.Range(0, seq).Select(_ => (long)r.NextInt64(3, vocab)).ToArray();
            var labels = ids.Select((id, j) => completion == 0 || j >= seq - completion ? id : FinetuneObjective.IgnoreIndex).ToArray();
            list.Add(new EncodedExample(ids, labels));
        }
        return list;
    }
}
