using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ML.Finetune.Adapters;
using ML.Finetune.Distributed;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

/// <summary>
/// Data-parallel step time and all-reduce cost for the GPT-2-small shape, through the library's FinetuneTrainer.
/// <c>--data-parallel</c> (the parent) runs the same training once as one process and once under
/// <c>mpirun -np N</c>, each in child processes (<c>--dp-child</c>), and prints step time, the time and bytes of the
/// step's collectives, and what those bytes would cost over common interconnects.
/// </summary>
public static class DataParallelProbe
{
    public sealed record Settings(int Layers = 12, int Batch = 4, int Seq = 128, int Steps = 5, int Warmup = 2, int Ranks = 2,
        int Threads = 1, string[]? Modes = null, string Btl = "self,vader", long Seed = 1234)
    {
        public string[] ModeList => Modes ?? ["full", "lora"];
    }

    /// <summary>One run's figures (rank 0's view; every rank does the same work on its shard).</summary>
    public sealed record Result(string Mode, int Ranks, int ThreadsPerRank, double MedianStepMs, double[] StepMs,
        double MedianCollectiveMs, long CollectiveBytesPerStep, double MedianAllReduceMs, long GradientBytes, int Buckets, long TrainableParams,
        double PeakRssMiB, double FinalLoss);

    public static int Parent(string[] args)
    {
        var s = Parse(args);
        string self = typeof(DataParallelProbe).Assembly.Location;
        string? mpirun = Environment.GetEnvironmentVariable("PATH")?.Split(':').Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists);
        Console.WriteLine($"Data parallelism, GPT-2-small shape ({s.Layers} layers, d=768, vocab 50257), global batch {s.Batch} × seq {s.Seq}, " +
                          $"fp32, AdamW; median of {s.Steps} steps after {s.Warmup}; {Environment.ProcessorCount} CPUs, load avg {LoadAvg()}");
        Console.WriteLine($"CPU flags: {CpuFlags()}");
        if (mpirun is null) { Console.WriteLine("mpirun not found: install Open MPI (apt-get install openmpi-bin libopenmpi-dev)"); return 1; }
        var rows = new List<Result>();
        foreach (var mode in s.ModeList)
        {
            var one = Child(["dotnet", self], s with { Modes = [mode], Threads = s.Threads * s.Ranks });
            var many = Child([mpirun, "--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "--mca", "btl", s.Btl, "-np", s.Ranks.ToString(), "dotnet", self],
                s with { Modes = [mode] });
            rows.AddRange(new[] { one, many }.Where(r => r != null)!);
            if (one != null && many != null) Print(one, many, s);
        }
        Console.WriteLine($"load avg after: {LoadAvg()}");
        return 0;
    }

    static Result? Child(string[] command, Settings s)
    {
        var psi = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["TERM"] = "dumb";
        foreach (var a in command.Skip(1)) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("--dp-child"); psi.ArgumentList.Add(JsonSerializer.Serialize(s));
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var lines = p.StandardOutput.ReadToEnd().Split('\n');
        p.WaitForExit();
        var line = lines.FirstOrDefault(l => l.Contains("DPRESULT "));
        if (p.ExitCode != 0 || line is null) { Console.WriteLine($"child failed ({p.ExitCode}): {string.Join("\n", lines)}\n{err.Result}"); return null; }
        return JsonSerializer.Deserialize<Result>(line[(line.IndexOf("DPRESULT ") + "DPRESULT ".Length)..]);
    }

    /// <summary>Runs in every rank (or alone): trains Warmup + Steps steps and reports rank 0's timings.</summary>
    public static int ChildRun(string json)
    {
        var s = JsonSerializer.Deserialize<Settings>(json)!;
        var comm = Communicator.World;
        torch.set_num_threads(s.Threads);
        string mode = s.ModeList[0];
        var cfg = Workloads.Gpt2Small(s.Layers);
        using var model = ML.Finetune.Models.CausalLMFactory.CreateRandom(cfg, s.Seed, ScalarType.Float32);
        IFinetuneMethod method = mode == "lora"
            ? new LoraMethod(new LoraConfig { Rank = 8, Alpha = 16, TargetModules = ["c_attn"] })
            : new FullFinetuneMethod();
        method.Attach(model, s.Seed);
        var rng = new Random((int)s.Seed);
        var data = Enumerable.Range(0, s.Batch * (s.Warmup + s.Steps)).Select(_ =>
        {
            var ids = Enumerable.Range(0, s.Seq).Select(_ => (long)rng.Next(cfg.VocabSize)).ToArray();
            return new EncodedExample(ids, ids); // every next token is a target, as in the other bench modes
        }).ToList();
        var trainer = new FinetuneTrainer(new TrainerOptions
        {
            LearningRate = 1e-4, Optimizer = OptimizerKind.AdamW, BatchSize = s.Batch, MaxSteps = s.Warmup + s.Steps, Seed = s.Seed,
            Shuffle = false, GradientClipNorm = null,
        }, padId: 0);
        var marks = new List<(double Ms, CommunicationStats Stats)>();
        var sw = Stopwatch.StartNew();
        comm.ResetStats();
        marks.Add((0, comm.Stats));
        trainer.Progress = _ => marks.Add((sw.Elapsed.TotalMilliseconds, comm.Stats));
        var history = trainer.Train(model, method, data);
        var steps = Enumerable.Range(1 + s.Warmup, s.Steps).ToArray();
        double[] stepMs = steps.Select(i => marks[i].Ms - marks[i - 1].Ms).ToArray();
        double[] commMs = steps.Select(i => (marks[i].Stats.Seconds - marks[i - 1].Stats.Seconds) * 1000).ToArray();
        long bytes = marks[^1].Stats.Bytes - marks[^2].Stats.Bytes;
        using var buckets = new ParameterBuckets(Communicator.SingleProcess, method.TrainableParameters);
        double allReduceMs = comm.IsDistributed ? TimeAllReduce(comm, buckets.Bytes / 4, s.Steps) : 0;
        if (comm.IsRoot)
            Console.WriteLine("DPRESULT " + JsonSerializer.Serialize(new Result(mode, comm.Size, s.Threads, Workloads.Median(stepMs), stepMs,
                Workloads.Median(commMs), bytes, allReduceMs, buckets.Bytes, buckets.BucketCount, method.TrainableParameters.Sum(p => p.Parameter.numel()),
                ProcStats.PeakRssMiB(), history.Records[^1].TrainLoss)));
        (method as IDisposable)?.Dispose();
        return 0;
    }

    /// <summary>
    /// The gradient all-reduce alone: the step's bucket sizes, every rank released together by a barrier, so the time is
    /// the transfer and reduction, not the wait for a slower rank (the in-training figure includes that wait). Median ms.
    /// </summary>
    static double TimeAllReduce(Communicator comm, long elements, int repetitions)
    {
        using var buffer = torch.ones(elements, dtype: ScalarType.Float32);
        var times = new double[repetitions];
        for (int k = 0; k < repetitions; k++)
        {
            comm.Barrier();
            var sw = Stopwatch.StartNew();
            for (long start = 0; start < elements; start += ParameterBuckets.BucketElements)
                using (var part = buffer.narrow(0, start, Math.Min(ParameterBuckets.BucketElements, elements - start)))
                    comm.AllReduce(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(part.bytes));
            times[k] = sw.Elapsed.TotalMilliseconds;
        }
        return Workloads.Median(times);
    }

    static void Print(Result one, Result many, Settings s)
    {
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine();
        Console.WriteLine($"{one.Mode}: {one.TrainableParams:N0} trainable parameters, gradient bucket {one.GradientBytes / 1e6:F1} MB in {one.Buckets} all-reduce(s) per step");
        Console.WriteLine("| run | threads/rank | step ms (median) | tokens/s | in collectives ms/step | bytes/step/rank | all-reduce alone ms | peak RSS MiB/rank | final loss |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var r in new[] { one, many })
            Console.WriteLine(string.Format(inv, "| {0} rank(s) | {1} | {2:F0} | {3:F0} | {4:F1} | {5:N0} | {6:F1} | {7:F0} | {8:F5} |", r.Ranks, r.ThreadsPerRank,
                r.MedianStepMs, s.Batch * s.Seq / (r.MedianStepMs / 1000), r.MedianCollectiveMs, r.CollectiveBytesPerStep, r.MedianAllReduceMs, r.PeakRssMiB, r.FinalLoss));
        Console.WriteLine(string.Format(inv, "speed-up {0:F2}x; all-reduce alone {1:F2} GB/s per rank (gradient bytes / barrier-synchronized all-reduce time); " +
            "\"in collectives\" also counts waiting for the slower rank", one.MedianStepMs / many.MedianStepMs,
            many.MedianAllReduceMs > 0 ? many.GradientBytes / (many.MedianAllReduceMs / 1000) / 1e9 : double.NaN));
        // Ring all-reduce moves 2(N−1)/N × the buffer through each rank's link; latency terms ignored (a few large buckets).
        Console.WriteLine("projected all-reduce per step from the measured bytes (ring, bandwidth-bound):");
        Console.WriteLine("| link | 2 ranks | 8 ranks | 64 ranks |");
        Console.WriteLine("|---|---|---|---|");
        foreach (var (name, bytesPerSecond) in new[] { ("10 Gb/s Ethernet", 1.25e9), ("100 Gb/s Ethernet/IB", 12.5e9), ("NVLink 4 (450 GB/s per direction)", 450e9) })
            Console.WriteLine("| " + name + " | " + string.Join(" | ", new[] { 2, 8, 64 }.Select(n =>
                string.Format(inv, "{0:F1} ms", 2.0 * (n - 1) / n * one.GradientBytes / bytesPerSecond * 1000))) + " |");
    }

    static Settings Parse(string[] a)
    {
        var s = new Settings();
        for (int i = 1; i < a.Length; i++)
        {
            string Next() => i + 1 < a.Length ? a[++i] : throw new ArgumentException($"{a[i]} needs a value");
            s = a[i] switch
            {
                "--layers" => s with { Layers = int.Parse(Next()) },
                "--batch" => s with { Batch = int.Parse(Next()) },
                "--seq" => s with { Seq = int.Parse(Next()) },
                "--steps" => s with { Steps = int.Parse(Next()) },
                "--warmup" => s with { Warmup = int.Parse(Next()) },
                "--ranks" => s with { Ranks = int.Parse(Next()) },
                "--threads" => s with { Threads = int.Parse(Next()) },
                "--modes" => s with { Modes = Next().Split(',', StringSplitOptions.RemoveEmptyEntries) },
                "--btl" => s with { Btl = Next() },
                _ => throw new ArgumentException($"unknown option {a[i]} (--layers --batch --seq --steps --warmup --ranks --threads --modes full,lora --btl self,vader|self,tcp)"),
            };
        }
        return s;
    }

    static string LoadAvg() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

    static string CpuFlags() => File.Exists("/proc/cpuinfo")
        ? string.Join(" ", new[] { "avx2", "avx512f", "avx512_bf16", "amx_bf16" }.Where(f => File.ReadAllText("/proc/cpuinfo").Contains(" " + f)))
        : "?";
}
