using ML.Finetune.Adapters;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;

namespace ML.Finetune.Bench;

/// <summary>
/// Leak check for long loops: FinetuneTrainer.Train for many steps on a small GPT-2 (4 layers, d=256, vocab 5000),
/// full finetuning with AdamW and the distance report, then LoRA; prints RSS every N steps. A per-step leak of even
/// one activation-sized tensor shows up as a steady climb; flat figures after the first steps mean none.
/// </summary>
static class RssProbe
{
    public static void Run(int threads, int steps)
    {
        torch.set_num_threads(threads);
        var cfg = new CausalLMConfig
        {
            ModelType = "gpt2", VocabSize = 5000, HiddenSize = 256, NumLayers = 4, NumHeads = 4, NumKeyValueHeads = 4, HeadDim = 64,
            IntermediateSize = 1024, MaxPositionEmbeddings = 128, TieWordEmbeddings = true, HiddenAct = "gelu_new",
            ResidualDropout = 0.1, EosTokenIds = [2], PadTokenId = 0,
        };
        var r = new Random(1);
        var data = Enumerable.Range(0, 256).Select(_ =>
        {
            int n = r.Next(16, 64), prompt = n / 2;
            var ids = Enumerable.Range(0, n).Select(_ => (long)r.Next(3, cfg.VocabSize)).ToArray();
            return new EncodedExample(ids, ids.Select((t, i) => i < prompt ? -100L : t).ToArray());
        }).ToList();
        foreach (var (name, method) in new (string, IFinetuneMethod)[] { ("full", new FullFinetuneMethod()), ("lora", new LoraMethod(new LoraConfig { Rank = 8, Alpha = 16, TargetModules = [LoraConfig.AllLinear] })) })
        {
            using var model = CausalLMFactory.CreateRandom(cfg, 1);
            method.Attach(model, 1);
            var trainer = new FinetuneTrainer(new TrainerOptions { MaxSteps = steps, BatchSize = 8, LearningRate = 1e-4, GradientClipNorm = 1.0 }, 0);
            int every = Math.Max(1, steps / 10);
            trainer.Progress = p =>
            {
                int s = p.Record.Step + 1;
                if (s == 1 || s % every == 0) Console.WriteLine($"  {name,-5} step {s,6}: RSS {ProcStats.RssMiB(),7:F1} MiB   loss {p.Record.TrainLoss:F3}");
            };
            var sw = System.Diagnostics.Stopwatch.StartNew();
            trainer.Train(model, method, data);
            Console.WriteLine($"  {name,-5} {steps} steps in {sw.Elapsed.TotalSeconds:F0} s, peak RSS {ProcStats.PeakRssMiB():F0} MiB");
            (method as IDisposable)?.Dispose();
        }
    }
}
