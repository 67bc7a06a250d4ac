using System.Globalization;
using Microsoft.ML;
using ML.Finetune;
using ML.Finetune.Samples.Cli;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Training;

namespace ML.Finetune.Tests.Distributed;

/// <summary>
/// The samples CLI, unchanged, under `mpirun -np 2`: `finetune` trains data-parallel through the ML.NET estimator
/// (every rank calls Fit on the same IDataView) and rank 0 alone prints and writes the output folder, equal to the
/// single-process command; then the saved model's Transform and Evaluate under mpirun (distributed scoring) equal one
/// process's bit for bit.
/// </summary>
[Collection("mpirun")]
public sealed class CliUnderMpiTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("mlft-dpcli").FullName;
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    [MpiFact]
    public void FinetuneAndEvaluateUnderMpirunEqualOneProcess()
    {
        string model = Path.Combine(Path.GetDirectoryName(MpiRun.SamplesPath)!, "DefaultModel");
        string data = Path.Combine(_dir, "train.jsonl");
        // 21 pairs of different lengths; the CLI's batch of 16 splits 8 + 8, then 5 → 3 + 2.
        var pairs = QaBuilder.Build(FactCorpus.Load(Path.Combine(AppContext.BaseDirectory, "Data", "universities.tsv")).Take(21, 0), "train");
        File.WriteAllLines(data, pairs.Select(p => System.Text.Json.JsonSerializer.Serialize(new { prompt = p.Prompt, completion = p.Completion })));
        string[] Finetune(string outDir) => ["finetune", "--model", model, "--data", data, "--method", "lora", "--rank", "4", "--steps", "3", "--dtype", "float32", "--out", outDir];

        string two = Path.Combine(_dir, "two", "out"), one = Path.Combine(_dir, "one", "out");
        string mpiOutput = MpiRun.RunOk(2, MpiRun.SamplesPath, Finetune(two));
        var err = new StringWriter();
        Assert.True(Commands.Run(Finetune(one), err, new StringWriter()) == 0, err.ToString());

        Assert.Single(mpiOutput.Split('\n'), l => l.StartsWith("finetuned (lora)")); // rank 1 printed nothing
        Assert.Equal(["out"], Directory.GetFileSystemEntries(Path.Combine(_dir, "two")).Select(Path.GetFileName)); // and wrote nothing
        MpiRun.AssertClose(Path.Combine(two, "adapter", "adapter_model.safetensors"), Path.Combine(one, "adapter", "adapter_model.safetensors"), atol: 1e-6);
        var h2 = TrainingHistory.FromCsv(File.ReadAllText(Path.Combine(two, "history.csv"))).Records;
        var h1 = TrainingHistory.FromCsv(File.ReadAllText(Path.Combine(one, "history.csv"))).Records;
        Assert.Equal(3, h1.Count);
        Assert.Equal(h1.Count, h2.Count);
        for (int i = 0; i < h1.Count; i++)
            Assert.True(Math.Abs(h1[i].TrainLoss - h2[i].TrainLoss) <= 1e-6, $"step {i}: loss {h2[i].TrainLoss.ToString(CultureInfo.InvariantCulture)} vs {h1[i].TrainLoss.ToString(CultureInfo.InvariantCulture)}");

        // Distributed scoring of the saved model: rank 0 generates and scores rows 0–7 of each 16, rank 1 rows 8–15; every
        // rank gets every row, bit for bit what one process computes, and the same Evaluate metrics.
        var ml = new Microsoft.ML.MLContext(seed: 1);
        string input = Path.Combine(_dir, "input.idv");
        using (var f = File.Create(input))
            ml.Data.SaveAsBinary(ml.Data.LoadFromEnumerable(pairs.Select(p => new Commands.PromptCompletionRow { Prompt = p.Prompt, Completion = p.Completion })), f);
        MpiRun.RunOk(2, MpiRun.ProbePath, ["score", Path.Combine(two, "model.zip"), input, Path.Combine(_dir, "scored")]);
        var loaded = ml.Model.Load(Path.Combine(two, "model.zip"), out _);
        try
        {
            var scored = loaded.Transform(ml.Data.LoadFromBinary(input));
            string alone = ML.Finetune.Testing.DataViewDump.ToJson(scored);
            Assert.Contains("\"GeneratedText\"", alone);
            string metrics = System.Text.Json.JsonSerializer.Serialize(ml.Finetune().Evaluate(scored));
            for (int rank = 0; rank < 2; rank++)
            {
                Assert.Equal(alone, File.ReadAllText(Path.Combine(_dir, "scored", $"score.rank{rank}.json")));
                Assert.Equal(metrics, File.ReadAllText(Path.Combine(_dir, "scored", $"metrics.rank{rank}.json")));
            }
        }
        finally { (loaded as IDisposable)?.Dispose(); }
    }

    [MpiFact]
    public void PackedConversationsUnderMpirunEqualOneProcess()
    {
        // 8 conversations packed into a few rows of 128 tokens: each rank takes its shard of the global batch of rows, and
        // the CE divisor stays the whole batch's target count.
        string model = ML.Finetune.Tests.Chat.TinyChatModel.Create(Path.Combine(_dir, "chat-model"));
        string data = Path.Combine(_dir, "chats.jsonl");
        var exchanges = ML.Finetune.Tests.Chat.TinyChatModel.Exchanges;
        File.WriteAllLines(data, exchanges.Concat(exchanges.Select(x => (x.User + " Please.", x.Assistant + " Done.")))
            .Select(x => $"{{\"messages\": {ML.Finetune.Tests.Chat.TinyChatModel.Json(x.Item1, x.Item2)}}}"));
        string[] Finetune(string outDir) => ["finetune", "--model", model, "--data", data, "--method", "lora", "--rank", "4", "--steps", "3",
            "--packing", "--dtype", "float32", "--out", outDir];
        string two = Path.Combine(_dir, "two"), one = Path.Combine(_dir, "one");
        string mpiOutput = MpiRun.RunOk(2, MpiRun.SamplesPath, Finetune(two));
        var err = new StringWriter();
        Assert.True(Commands.Run(Finetune(one), err, new StringWriter()) == 0, err.ToString());
        Assert.Single(mpiOutput.Split('\n'), l => l.StartsWith("data: ") && l.Contains("8 conversations") && l.Contains("packed into rows of 128 tokens"));
        MpiRun.AssertClose(Path.Combine(two, "adapter", "adapter_model.safetensors"), Path.Combine(one, "adapter", "adapter_model.safetensors"), atol: 1e-6);
        var h2 = TrainingHistory.FromCsv(File.ReadAllText(Path.Combine(two, "history.csv"))).Records;
        var h1 = TrainingHistory.FromCsv(File.ReadAllText(Path.Combine(one, "history.csv"))).Records;
        Assert.Equal(3, h1.Count);
        for (int i = 0; i < h1.Count; i++)
            Assert.True(Math.Abs(h1[i].TrainLoss - h2[i].TrainLoss) <= 1e-6, $"step {i}: loss {h2[i].TrainLoss.ToString(CultureInfo.InvariantCulture)} vs {h1[i].TrainLoss.ToString(CultureInfo.InvariantCulture)}");
    }
}
