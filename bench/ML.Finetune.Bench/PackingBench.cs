using System.Diagnostics;
using ML.Finetune.Adapters;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

/// <summary>
/// `--packing`: useful (label) tokens per second of the library's training loop (<see cref="FinetuneTrainer"/>) on a data
/// set with skewed lengths, padded batches against packed rows (<see cref="SequencePacker"/>). Both train one epoch over
/// the same examples from the same initial weights: padded = BatchSize examples per step, right-padded to the longest;
/// packed = BatchSize rows of MaxLength tokens per step. Label tokens are the same in both (packing is exact), so the
/// ratio of the two wall times is the speed-up. Lengths are log-normal (median --median, σ --sigma), clipped to [16, 512];
/// every token is a label (plain-text data), token ids uniform over the vocabulary.
/// </summary>
public static class PackingBench
{
    sealed record Settings(int Examples = 256, int Layers = 4, int Batch = 8, int MaxLength = 512, double Median = 64, double Sigma = 1.0,
        int Threads = 2, string Method = "lora", string DType = "auto", long Seed = 1, int Runs = 1, int? PackedBatch = null)
    {
        /// <summary>Rows per packed step (default: the padded batch; fewer rows per step match the padded steps' memory).</summary>
        public int PackedRows => PackedBatch ?? Batch;
    }

    public static int Run(string[] args)
    {
        var s = Parse(args);
        torch.set_num_threads(s.Threads);
        var dtype = s.DType switch
        {
            "fp32" => ScalarType.Float32,
            "bf16" => ScalarType.BFloat16,
            _ => ML.Finetune.Runtime.AutoDType.Resolve(ML.Finetune.Estimators.FinetuneDType.Auto, torch.CPU).DType,
        };
        var cfg = Workloads.Gpt2Small(s.Layers);
        var examples = Examples(s, cfg.VocabSize);
        var packed = SequencePacker.Pack(examples, s.MaxLength);
        long labels = FinetuneObjective.CountTargets(examples);
        long tokens = examples.Sum(e => (long)e.Length);
        Console.WriteLine($"packing bench: GPT-2-small shape, {s.Layers} layers, {dtype}, {s.Method}, {s.Threads} threads; " +
                          $"{s.Examples} examples, lengths log-normal (median {s.Median}, σ {s.Sigma}) clipped to [16, {s.MaxLength}]: " +
                          $"mean {examples.Average(e => e.Length):F1}, max {examples.Max(e => e.Length)}, {tokens:N0} tokens, {labels:N0} label tokens");
        Console.WriteLine($"CPU: {Cpu()}; flags: {Flags()}; load avg before: {LoadAvg()}");
        long paddedSlots = Batches(examples, s.Batch).Sum(b => (long)b.Count * b.Max(e => e.Length));
        long packedSlots = Batches(packed, s.PackedRows).Sum(b => (long)b.Count * b.Max(e => e.Length));
        Console.WriteLine($"padded: {examples.Count} rows in {(examples.Count + s.Batch - 1) / s.Batch} steps, {paddedSlots:N0} token slots " +
                          $"({100.0 * tokens / paddedSlots:F1}% real, batch {s.Batch}); packed: {packed.Count} rows in {(packed.Count + s.PackedRows - 1) / s.PackedRows} steps, " +
                          $"{packedSlots:N0} token slots ({100.0 * tokens / packedSlots:F1}% real, batch {s.PackedRows} rows)");

        Warm(cfg, dtype, s, examples);
        Console.WriteLine("| run | mode | steps | wall s | label tokens/s | speed-up |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|");
        for (int run = 1; run <= s.Runs; run++)
        {
            var (padSteps, padSeconds) = Epoch(cfg, dtype, s, examples);
            var (packSteps, packSeconds) = Epoch(cfg, dtype, s with { Batch = s.PackedRows }, packed);
            Console.WriteLine($"| {run} | padded | {padSteps} | {padSeconds:F1} | {labels / padSeconds:F0} | 1.00 |");
            Console.WriteLine($"| {run} | packed | {packSteps} | {packSeconds:F1} | {labels / packSeconds:F0} | {padSeconds / packSeconds:F2} |");
        }
        Console.WriteLine($"load avg after: {LoadAvg()}");
        return 0;
    }

    /// <summary>Lengths from a seeded log-normal, clipped; ids uniform; every token a label.</summary>
    static List<EncodedExample> Examples(Settings s, int vocab)
    {
        var r = new Random((int)s.Seed);
        var list = new List<EncodedExample>();
        for (int i = 0; i < s.Examples; i++)
        {
            double z = Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble());
            int n = Math.Clamp((int)Math.Round(s.Median * Math.Exp(s.Sigma * z)), 16, s.MaxLength);
            var ids = Enumerable.Range(0, n).Select(_ => (long)r.Next(vocab)).ToArray();
            list.Add(new EncodedExample(ids, (long[])ids.Clone()));
        }
        return list;
    }

    static IEnumerable<List<EncodedExample>> Batches(IReadOnlyList<EncodedExample> rows, int batch)
    {
        for (int i = 0; i < rows.Count; i += batch) yield return rows.Skip(i).Take(batch).ToList();
    }

    static IFinetuneMethod Method(string name) => name == "full"
        ? new FullFinetuneMethod()
        : new LoraMethod(new LoraConfig { Rank = 8, Alpha = 16, TargetModules = ["c_attn"] });

    /// <summary>One epoch, in data order (no shuffling: both modes see their rows in the order they were made), timed.</summary>
    static (int Steps, double Seconds) Epoch(CausalLMConfig cfg, ScalarType dtype, Settings s, IReadOnlyList<EncodedExample> rows)
    {
        using var model = CausalLMFactory.CreateRandom(cfg, s.Seed, dtype);
        var method = Method(s.Method);
        method.Attach(model, s.Seed);
        var trainer = new FinetuneTrainer(new TrainerOptions { LearningRate = 1e-4, BatchSize = s.Batch, Epochs = 1, Shuffle = false, Seed = s.Seed }, 0);
        int steps = 0;
        trainer.Progress = _ => steps++;
        var sw = Stopwatch.StartNew();
        trainer.Train(model, method, rows);
        sw.Stop();
        (method as IDisposable)?.Dispose();
        return (steps, sw.Elapsed.TotalSeconds);
    }

    /// <summary>Two steps on a few examples first: libtorch's first-use costs (kernel selection, allocations) are not in either mode's time.</summary>
    static void Warm(CausalLMConfig cfg, ScalarType dtype, Settings s, IReadOnlyList<EncodedExample> examples) =>
        Epoch(cfg, dtype, s, examples.Take(2 * s.Batch).ToList());

    static Settings Parse(string[] a)
    {
        var s = new Settings();
        for (int i = 1; i < a.Length; i++)
        {
            string Next() => i + 1 < a.Length ? a[++i] : throw new ArgumentException($"{a[i]} needs a value");
            s = a[i] switch
            {
                "--examples" => s with { Examples = int.Parse(Next()) },
                "--layers" => s with { Layers = int.Parse(Next()) },
                "--batch" => s with { Batch = int.Parse(Next()) },
                "--max-length" => s with { MaxLength = int.Parse(Next()) },
                "--median" => s with { Median = double.Parse(Next()) },
                "--sigma" => s with { Sigma = double.Parse(Next()) },
                "--threads" => s with { Threads = int.Parse(Next()) },
                "--method" => s with { Method = Next() },
                "--dtype" => s with { DType = Next() },
                "--seed" => s with { Seed = long.Parse(Next()) },
                "--runs" => s with { Runs = int.Parse(Next()) },
                "--packed-batch" => s with { PackedBatch = int.Parse(Next()) },
                _ => throw new ArgumentException($"unknown option {a[i]}: --packing [--examples 256] [--layers 4] [--batch 8] [--max-length 512] " +
                                                 "[--median 64] [--sigma 1] [--threads 2] [--method lora|full] [--dtype auto|fp32|bf16] [--seed 1] [--runs 1] [--packed-batch n]"),
            };
        }
        if (s.Method is not ("lora" or "full")) throw new ArgumentException("--method must be lora or full");
        return s;
    }

    static string Cpu() => File.Exists("/proc/cpuinfo")
        ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "?" : "?";

    static string Flags() => File.Exists("/proc/cpuinfo")
        ? string.Join(" ", new[] { "avx2", "avx512f", "avx512_bf16", "amx_bf16" }.Where(f => File.ReadAllText("/proc/cpuinfo").Contains(" " + f)))
        : "?";

    static string LoadAvg() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";
}
