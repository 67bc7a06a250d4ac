namespace ML.Finetune.Tests.Distributed;

/// <summary>
/// Checkpoints under data parallelism: rank 0 alone writes them; a 2-rank run resumed on 2 ranks continues bit for bit
/// (each rank's dropout stream is in the checkpoint); a 1-process checkpoint resumed on 2 ranks continues the same run
/// (data order and objective do not depend on the world size), at 1e-6.
/// </summary>
[Collection("mpirun")]
public sealed class DistributedResumeTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), "mlft-dpresume-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    string Job(string name, string extra) => $"{name}:steps=6,every=2,ckpt={Path.Combine(_dir, "ck-" + name)},{extra}";

    [MpiFact]
    public void ResumesOnTheSameAndOnAnotherWorldSize()
    {
        string dropout = Job("dropout", "model=gpt2,dropout=0.1"), plain = Job("plain", "varlen=1,batch=3,n=7");
        var first = MpiRun.RunOk(2, MpiRun.ProbePath, [Path.Combine(_dir, "first"), dropout]);
        MpiRun.RunOk(0, MpiRun.ProbePath, [Path.Combine(_dir, "first"), plain]);
        // Rank 0 alone wrote the checkpoints (steps 4 and 6 are kept).
        Assert.Equal(3, first.Split('\n').Count(l => l.StartsWith("CHECKPOINT dropout")));
        Assert.Equal(["step-00000004", "step-00000006"], Directory.GetDirectories(Path.Combine(_dir, "ck-dropout")).Select(Path.GetFileName).Order());

        // Interrupted after step 4: drop the last checkpoint of each run and train again, both on 2 ranks.
        foreach (var name in new[] { "dropout", "plain" }) Directory.Delete(Path.Combine(_dir, "ck-" + name, "step-00000006"), true);
        var second = MpiRun.RunOk(2, MpiRun.ProbePath, [Path.Combine(_dir, "second"), dropout + ";" + plain]);
        Assert.Contains("RESUMED dropout 4", second);
        Assert.Contains("RESUMED plain 4", second);
        Assert.Contains("written by 1 data-parallel rank(s) and resumes on 2", second);

        for (int rank = 0; rank < 2; rank++)
            MpiRun.AssertBitwiseEqual(Path.Combine(_dir, "first", $"dropout.rank{rank}.safetensors"), Path.Combine(_dir, "second", $"dropout.rank{rank}.safetensors"));
        MpiRun.AssertClose(Path.Combine(_dir, "first", "plain.rank0.safetensors"), Path.Combine(_dir, "second", "plain.rank0.safetensors"), atol: 1e-6);
    }
}
