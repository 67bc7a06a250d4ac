using System.Diagnostics;
using System.Text.Json;
using ML.Finetune.Adapters;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

public sealed record KlRunSettings(int Texts, int TextLength, string Mode, string Method, int Layers, int Batch, int Steps, int TopK, int Threads);

public sealed record KlResult(int Texts, int TextLength, string Mode, string Method, double PrepareSeconds, double MedianStepSeconds,
    double PeakRssMiB, double PeakAnonMiB, double PreviousCacheMiB, double TopKCacheMiB, double LastKl);

/// <summary>
/// Memory of the KL penalty against the size of the reference set: the library's trainer with λ = 0.1 on N reference
/// texts (GPT-2-small width and vocabulary, random weights), p_θp on the fly or from the top-k cache, each N and mode in
/// its own child process. Prints the peak RSS (total and anonymous) next to what the previous full cache of log p_θp
/// would have held (N · length · V · 4 bytes).
/// </summary>
static class KlProbe
{
    public sealed class Options
    {
        public int[] Texts = [16, 256, 2048];
        public int TextLength = 64, Layers = 2, Batch = 4, Steps = 3, TopK = 64, Threads = 2;
        public string[] Modes = ["onthefly", "topk"];
        public string Method = "lora";
        public string? JsonOut;
    }

    public static Options Parse(string[] a)
    {
        var o = new Options();
        for (int i = 1; i < a.Length; i++)
        {
            string Next() => i + 1 < a.Length ? a[++i] : throw new ArgumentException($"{a[i]} needs a value");
            switch (a[i])
            {
                case "--texts": o.Texts = Next().Split(',').Select(int.Parse).ToArray(); break;
                case "--text-len": o.TextLength = int.Parse(Next()); break;
                case "--layers": o.Layers = int.Parse(Next()); break;
                case "--batch": o.Batch = int.Parse(Next()); break;
                case "--steps": o.Steps = int.Parse(Next()); break;
                case "--topk": o.TopK = int.Parse(Next()); break;
                case "--threads": o.Threads = int.Parse(Next()); break;
                case "--modes": o.Modes = Next().Split(','); break;
                case "--method": o.Method = Next(); break;
                case "--json": o.JsonOut = Next(); break;
                default:
                    throw new ArgumentException($"unknown option {a[i]}\n  --kl-probe [--texts 16,256,2048] [--text-len 64] [--layers 2] [--batch 4] " +
                                                "[--steps 3] [--topk 64] [--modes onthefly,topk] [--method lora|full] [--threads 2] [--json out.json]");
            }
        }
        return o;
    }

    public static void Run(Options o)
    {
        Console.WriteLine($"KL memory probe: GPT-2-small width (d=768, V=50257), {o.Layers} layers, {o.Method}, λ = 0.1, reference texts of " +
                          $"{o.TextLength} tokens, batch {o.Batch}, {o.Steps} steps; each run in its own process; load avg {LoadBench.LoadAvg()}");
        var results = new List<KlResult>();
        foreach (var mode in o.Modes)
            foreach (int n in o.Texts)
            {
                var s = new KlRunSettings(n, o.TextLength, mode, o.Method, o.Layers, o.Batch, o.Steps, o.TopK, o.Threads);
                var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
                string entry = Environment.GetCommandLineArgs()[0];
                if (ChildProcess.NeedsEntryAssembly(entry)) psi.ArgumentList.Add(entry);
                psi.ArgumentList.Add("--kl-child");
                psi.ArgumentList.Add(JsonSerializer.Serialize(s));
                using var p = Process.Start(psi)!;
                var err = p.StandardError.ReadToEndAsync();
                string stdout = p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                var line = stdout.Split('\n').FirstOrDefault(l => l.StartsWith("RESULT "));
                if (p.ExitCode != 0 || line == null) { Console.WriteLine($"{mode} N={n}: failed ({p.ExitCode}) {err.Result}"); continue; }
                var r = JsonSerializer.Deserialize<KlResult>(line["RESULT ".Length..])!;
                results.Add(r);
                Console.WriteLine($"{r.Mode,-8} N={r.Texts,5} ({r.Texts * r.TextLength,7:N0} tokens) | peak RSS {r.PeakRssMiB,6:F0} MiB (anon {r.PeakAnonMiB,6:F0}) | " +
                                  $"previous full cache would be {r.PreviousCacheMiB,9:N0} MiB | top-k cache {r.TopKCacheMiB,6:F1} MiB | prepare {r.PrepareSeconds,5:F1} s | " +
                                  $"step {r.MedianStepSeconds:F2} s | KL {r.LastKl:E3}");
            }
        if (o.JsonOut != null) File.WriteAllText(o.JsonOut, JsonSerializer.Serialize(new { loadavg = LoadBench.LoadAvg(), results }, new JsonSerializerOptions { WriteIndented = true }));
    }

    public static int ChildMain(string json)
    {
        var s = JsonSerializer.Deserialize<KlRunSettings>(json)!;
        torch.set_num_threads(s.Threads);
        using var sampler = new MemorySampler();
        var config = Workloads.Gpt2Small(s.Layers);
        using var model = CausalLMFactory.CreateRandom(config, 3);
        IFinetuneMethod method = s.Method == "full" ? new FullFinetuneMethod() : new LoraMethod(new LoraConfig { Rank = 8, Alpha = 16 });
        method.Attach(model, 3);
        var r = new Random(5);
        long[] Row(int n) => Enumerable.Range(0, n).Select(_ => (long)r.Next(3, (int)config.VocabSize)).ToArray();
        var train = Enumerable.Range(0, s.Batch * s.Steps).Select(_ =>
        {
            var ids = Row(64);
            return new EncodedExample(ids, ids.Select((id, j) => j >= 48 ? id : FinetuneObjective.IgnoreIndex).ToArray());
        }).ToList();
        var texts = Enumerable.Range(0, s.Texts).Select(_ => Row(s.TextLength)).ToList();
        var trainer = new FinetuneTrainer(new TrainerOptions
        {
            LearningRate = 1e-3, BatchSize = s.Batch, MaxSteps = s.Steps, KlPenalty = 0.1, Shuffle = false,
            KlReference = s.Mode == "topk" ? KlReferenceMode.TopKCache : KlReferenceMode.OnTheFly, KlTopK = s.TopK,
        }, padId: 0);
        var times = new List<double>();
        var sw = Stopwatch.StartNew();
        double lastKl = 0;
        trainer.Progress = p => { times.Add(sw.Elapsed.TotalSeconds); lastKl = p.Record.KL; sw.Restart(); };
        trainer.Train(model, method, train, referenceTexts: texts);
        var (anon, _) = sampler.Stop();
        double step = Workloads.Median(times.Skip(1).ToArray());
        double topK = s.Mode == "topk" ? s.Texts * (double)s.TextLength * (8.0 * s.TopK + 4) / (1 << 20) : 0;
        var res = new KlResult(s.Texts, s.TextLength, s.Mode, s.Method, Math.Max(0, times[0] - step), step, ProcStats.PeakRssMiB(), anon,
            s.Texts * (double)s.TextLength * config.VocabSize * 4 / (1 << 20), topK, lastKl);
        (method as IDisposable)?.Dispose();
        Console.WriteLine("RESULT " + JsonSerializer.Serialize(res));
        return 0;
    }
}
