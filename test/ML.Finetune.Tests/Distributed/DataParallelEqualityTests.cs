using System.Globalization;
using ML.Finetune.Training;

namespace ML.Finetune.Tests.Distributed;

/// <summary>
/// Runs the probe's jobs once under `mpirun -np 2` and once as a single process (the same program, no code change),
/// then compares per job: both ranks end with bitwise-equal weights, and they equal the single process's weights and
/// history at 1e-6 (float32 sums in another order). BatchSize is the global batch: 2 ranks × a shard of 2 against
/// 1 process × 4.
/// </summary>
[Collection("mpirun")]
public sealed class DataParallelEqualityTests(ProbeRuns runs)
{
    /// <summary>name → probe job. Odd jobs: batches that do not divide by 2 (3 → 2 + 1, a last batch of 1 leaves rank 1
    /// empty), padding that differs between shards, gradient accumulation, L2 (once, on rank 0), KL reference batches
    /// split like the data (6 texts in batches of 5: rank 1 has none of the second), sharded validation with early
    /// stopping, and clipping on the global norm.</summary>
    public static readonly Dictionary<string, string> Jobs = new()
    {
        ["full-sgd"] = "opt=sgd",
        ["gpt2-full-sgd"] = "model=gpt2,opt=sgd",
        ["full-adamw"] = "opt=adamw",
        ["lora-sgd"] = "method=lora,opt=sgd",
        ["lora-adamw"] = "method=lora,opt=adamw",
        ["prompt-adamw"] = "method=prompt,lr=0.05",
        ["prefix-sgd"] = "method=prefix,opt=sgd,lr=0.05",
        ["odd-batches"] = "batch=3,n=7,steps=6,varlen=1",
        ["odd-penalties"] = "batch=5,n=11,acc=2,varlen=1,l2=0.1,kl=0.2,val=5,patience=2,clip=0.5,steps=4",
    };

    public static TheoryData<string> JobNames => new(Jobs.Keys);

    [MpiTheory]
    [MemberData(nameof(JobNames))]
    public void TwoRanksTrainTheModelOneProcessTrains(string job)
    {
        // Every rank applied the same all-reduced update.
        MpiRun.AssertBitwiseEqual(runs.TwoRanks(job, 0) + ".safetensors", runs.TwoRanks(job, 1) + ".safetensors");
        MpiRun.AssertClose(runs.TwoRanks(job, 0) + ".safetensors", runs.OneProcess(job) + ".safetensors", atol: 1e-6);

        var two = TrainingHistory.FromCsv(File.ReadAllText(runs.TwoRanks(job, 0) + ".csv")).Records;
        var one = TrainingHistory.FromCsv(File.ReadAllText(runs.OneProcess(job) + ".csv")).Records;
        Assert.Equal(File.ReadAllText(runs.TwoRanks(job, 0) + ".csv"), File.ReadAllText(runs.TwoRanks(job, 1) + ".csv"));
        Assert.Equal(one.Count, two.Count);
        Assert.True(one.Count >= 2, "the job should run several steps");
        for (int i = 0; i < one.Count; i++)
        {
            var (a, b) = (two[i], one[i]);
            Assert.Equal(b.Step, a.Step);
            Assert.Equal(b.LearningRate, a.LearningRate);
            foreach (var (what, x, y) in new[] { ("train loss", a.TrainLoss, b.TrainLoss), ("CE", a.CrossEntropy, b.CrossEntropy), ("L2", a.L2, b.L2),
                         ("KL", a.KL, b.KL), ("distance", a.Distance, b.Distance), ("validation loss", a.ValLoss, b.ValLoss) })
                Assert.True(double.IsNaN(x) && double.IsNaN(y) || Math.Abs(x - y) <= 1e-6,
                    $"{job} step {b.Step}: {what} {x.ToString(CultureInfo.InvariantCulture)} on 2 ranks, {y.ToString(CultureInfo.InvariantCulture)} alone");
            Assert.True(Math.Abs(a.GradNorm - b.GradNorm) <= 1e-5 * Math.Max(1, b.GradNorm), $"{job} step {b.Step}: gradient norm {a.GradNorm} vs {b.GradNorm}");
        }
    }

    [MpiFact]
    public void PenaltiesAndValidationAreActuallyExercised()
    {
        // Guards the odd-penalties job against silently testing nothing: L2 and KL are nonzero, validation ran.
        var h = TrainingHistory.FromCsv(File.ReadAllText(runs.OneProcess("odd-penalties") + ".csv")).Records;
        Assert.Contains(h, r => r.L2 > 0);
        Assert.Contains(h, r => r.KL > 0);
        Assert.All(h, r => Assert.False(double.IsNaN(r.ValLoss)));
        Assert.Contains(h, r => r.GradNorm > 0.5); // clipping at 0.5 applied
    }
}
