using System.Globalization;
using ML.Finetune.Samples.Cli;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Training;

namespace ML.Finetune.Tests.Distributed;

/// <summary>
/// The samples CLI, unchanged, under `mpirun -np 2`: `finetune` trains data-parallel through the ML.NET estimator
/// (every rank calls Fit on the same IDataView) and rank 0 alone prints and writes the output folder; `evaluate`
/// splits Transform's rows across the ranks (distributed scoring). Both equal the single-process command.
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
        string[] Finetune(string outDir) => ["finetune", "--model", model, "--data", data, "--method", "lora", "--rank", "4", "--steps", "3", "--out", outDir];

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

        // Distributed scoring: rank 0 generates and scores rows 0–7 of each 16, rank 1 rows 8–15; the metrics match.
        string[] Evaluate(string outDir) => ["evaluate", "--zip", Path.Combine(outDir, "model.zip"), "--data", data];
        var evalTwo = MpiRun.RunOk(2, MpiRun.SamplesPath, Evaluate(one)).Split('\n').Where(l => l.Contains(" rows of ")).ToList();
        var output = new StringWriter();
        Assert.True(Commands.Run(Evaluate(one), err, output) == 0, err.ToString());
        Assert.Equal([output.ToString().Trim()], evalTwo.Select(l => l.Trim()));
        Assert.StartsWith("21 rows of", evalTwo[0]);
    }
}
