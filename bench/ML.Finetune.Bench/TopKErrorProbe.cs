using System.Diagnostics;
using ML.Finetune.Models;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

/// <summary>
/// How far the top-k KL (<see cref="KlReferenceMode.TopKCache"/>) is from the exact KL on a trained model: θ_p is the
/// samples' pretrained model (a 4-layer Llama trained on the university-facts corpus, so its next-token
/// distributions are peaked as a real LM's are), θ is θ_p after full finetuning on the QA pairs of the train split,
/// and the reference texts are fact sentences. For each k: the KL value, its relative error, the mean mass outside
/// the top k, and the cosine and relative norm error of the top-k gradient against the exact one.
/// </summary>
static class TopKErrorProbe
{
    public static int Run(string[] args)
    {
        string model = args.Length > 1 ? args[1] : FindDefaultModel();
        string tsv = args.Length > 2 ? args[2] : Path.Combine(RepoRoot(), "src", "ML.Finetune.Samples", "Data", "universities.tsv");
        torch.set_num_threads(2);
        var tokenizer = CausalLMTokenizer.FromFolder(model);
        var rows = File.ReadLines(tsv).Skip(1).Select(l => l.Split('\t')).Where(r => r.Length >= 4).ToList();
        var encoder = new ExampleEncoder(tokenizer, 64);
        var train = rows.Where(r => r[3] == "train").Select((r, i) => encoder.Encode($"Q: Where is {r[0]}? A:", $" {r[1]}", i, "Completion")).ToList();
        var texts = rows.Take(48).Select(r => encoder.EncodePrompt($"{r[0]} is located in {r[1]}.")).ToList();
        using var m = CausalLMFactory.LoadPretrained(model);
        using var method = new FullFinetuneMethod();
        method.Attach(m, 1);
        var sw = Stopwatch.StartNew();
        var history = new FinetuneTrainer(new TrainerOptions { LearningRate = 1e-3, MaxSteps = 30, BatchSize = 16, Seed = 1 }, encoder.PadId)
            .Train(m, method, train);
        Console.WriteLine($"θ_p: {model} (V = {m.Config.VocabSize}); θ: 30 AdamW steps on {train.Count} QA pairs ({sw.Elapsed.TotalSeconds:F1} s, " +
                          $"CE {history.Records[0].CrossEntropy:F3} → {history.Records[^1].CrossEntropy:F3}); reference: {texts.Count} fact sentences");
        using var batch = FinetuneTrainer.Collate(texts.Select(t => new EncodedExample(t, t)).ToList(), encoder.PadId);
        var pretrained = PretrainedModel.For(method, m);
        (double Kl, Tensor[] Grads) Evaluate(TopKLogProbs? topK)
        {
            foreach (var (_, p) in method.TrainableParameters) p.grad = null;
            var hidden = method.HiddenStates(m, batch.InputIds, batch.AttentionMask);
            var kl = FinetuneObjective.Kl(m, hidden, batch.InputIds, batch.AttentionMask, pretrained, topK);
            kl.backward();
            return (kl.item<float>(), method.TrainableParameters.Select(p => p.Parameter.grad!.detach().clone().reshape(-1)).ToArray());
        }
        using var scope = NewDisposeScope();
        var (exact, g) = Evaluate(null);
        var gFlat = cat(g, 0).to_type(ScalarType.Float64);
        Console.WriteLine($"exact KL {exact:E4}, gradient norm {gFlat.norm().item<double>():E4}");
        Console.WriteLine("|    k | top-k KL | relative error | mean p(rest) | gradient cosine | gradient relative error |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|");
        foreach (int k in new[] { 1, 2, 4, 8, 16, 32, 64, 128 })
        {
            if (k >= m.Config.VocabSize) break;
            using var topK = TopKLogProbs.Compute(m, pretrained, batch.InputIds, batch.AttentionMask, k);
            var (approx, ga) = Evaluate(topK);
            var aFlat = cat(ga, 0).to_type(ScalarType.Float64);
            double cosine = aFlat.dot(gFlat).item<double>() / (aFlat.norm().item<double>() * gFlat.norm().item<double>());
            double gradError = aFlat.sub(gFlat).norm().item<double>() / gFlat.norm().item<double>();
            double rest = topK.RestLogProb.exp().mean().item<float>();
            Console.WriteLine($"| {k,4} | {approx:E4} | {(exact - approx) / exact,8:P2} | {rest:E3} | {cosine:F6} | {gradError:P2} |");
        }
        return 0;
    }

    static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "MLFinetune.sln"))) return d.FullName;
        throw new DirectoryNotFoundException("repository root (MLFinetune.sln) not found above " + AppContext.BaseDirectory);
    }

    static string FindDefaultModel() => Path.Combine(RepoRoot(), "src", "ML.Finetune.Samples", "DefaultModel");
}
