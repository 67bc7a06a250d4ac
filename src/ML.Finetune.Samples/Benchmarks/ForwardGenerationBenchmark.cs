using System.Diagnostics;
using ML.Finetune.Generation;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Samples.Benchmarks;

/// <summary>
/// Forward and generation throughput of a GPT-2-small-shaped random model (12 layers, d=768, 12 heads, vocab 50257),
/// fp32 and bf16, with and without the KV cache.
/// </summary>
public static class ForwardGenerationBenchmark
{
    public static void Run(int newTokens = 128, int promptLen = 128, int batch = 4)
    {
        var cfg = new CausalLMConfig
        {
            ModelType = "gpt2", VocabSize = 50257, HiddenSize = 768, NumLayers = 12, NumHeads = 12, NumKeyValueHeads = 12,
            HeadDim = 64, IntermediateSize = 3072, MaxPositionEmbeddings = 1024, NormEps = 1e-5, TieWordEmbeddings = true,
            HiddenAct = "gelu_new", EosTokenIds = [],
        };
        Console.WriteLine($"threads={torch.get_num_threads()} prompt={promptLen} batch={batch} new={newTokens}");
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            using var model = CausalLMFactory.CreateRandom(cfg, seed: 1, dtype: dtype);
            using var noGrad = torch.no_grad();
            var ids = torch.randint(0, cfg.VocabSize, [batch, promptLen], dtype: ScalarType.Int64);
            using (torch.NewDisposeScope()) model.Forward(new CausalLMInput { InputIds = ids.narrow(1, 0, 8) }); // warm-up
            var sw = Stopwatch.StartNew();
            using (torch.NewDisposeScope()) model.Forward(new CausalLMInput { InputIds = ids });
            double fwd = batch * promptLen / sw.Elapsed.TotalSeconds;
            Console.WriteLine($"{dtype,-9} forward      {fwd,10:F1} tok/s");
            var prompts = Enumerable.Range(0, batch).Select(r => ids[r].narrow(0, 0, Math.Min(promptLen, 32)).data<long>().ToArray()).ToList();
            foreach (bool cache in new[] { true, false })
            {
                sw.Restart();
                var res = TextGenerator.Generate(model, prompts, new GenerationOptions { MaxNewTokens = newTokens, UseCache = cache, EosTokenIds = [] });
                int produced = res.NewTokens.Sum(t => t.Length);
                Console.WriteLine($"{dtype,-9} generate {(cache ? "cache  " : "nocache")} {produced / sw.Elapsed.TotalSeconds,10:F1} tok/s");
            }
            ids.Dispose();
        }
        Console.WriteLine($"peak RSS (VmHWM): {PeakRss()}");
    }

    static string PeakRss()
    {
        const string f = "/proc/self/status";
        if (!File.Exists(f)) return "n/a";
        return File.ReadLines(f).FirstOrDefault(l => l.StartsWith("VmHWM:"))?.Split(':', 2)[1].Trim() ?? "n/a";
    }
}
