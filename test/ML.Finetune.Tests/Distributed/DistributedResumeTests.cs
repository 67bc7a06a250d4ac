namespace ML.Finetune.Tests.Distributed;

/// <summary>
/// Checkpoints under data parallelism: rank 0 alone writes them; a 2-rank run resumed on 2 ranks continues bit for bit
/// (each rank's dropout stream is in the checkpoint); a 1-process checkpoint resumed on 2 ranks continues the same run
/// (data order and objective do not depend on the world size), at 1e-6.
/// </summary>
[Collection("mpirun")]
public sealed class DistributedResumeTests(ProbeRuns runs)
{
    [MpiFact]
    public void ResumesOnTheSameAndOnAnotherWorldSize()
    {
        // First legs (in ProbeRuns): 6 steps with a checkpoint every 2; rank 0 alone wrote them (steps 4 and 6 are kept).
        Assert.Equal(3, runs.TwoRanksOutput.Split('\n').Count(l => l.StartsWith("CHECKPOINT dropout")));
        string ckDropout = Path.Combine(runs.Folder, "ck-dropout"), ckPlain = Path.Combine(runs.Folder, "ck-plain");
        Assert.Equal(["step-00000004", "step-00000006"], Directory.GetDirectories(ckDropout).Select(Path.GetFileName).Order());

        // Interrupted after step 4: drop the last checkpoint of each run and train again, both on 2 ranks.
        foreach (var ck in new[] { ckDropout, ckPlain }) Directory.Delete(Path.Combine(ck, "step-00000006"), true);
        string resumed = Path.Combine(runs.Folder, "resumed");
        var output = MpiRun.RunOk(2, MpiRun.ProbePath, [resumed, runs.ResumeDropoutJob + ";" + runs.ResumePlainJob]);
        Assert.Contains("RESUMED dropout 4", output);
        Assert.Contains("RESUMED plain 4", output);
        Assert.Contains("written by 1 data-parallel rank(s) and resumes on 2", output);

        for (int rank = 0; rank < 2; rank++)
            MpiRun.AssertBitwiseEqual(runs.TwoRanks("dropout", rank) + ".safetensors", Path.Combine(resumed, $"dropout.rank{rank}.safetensors"));
        MpiRun.AssertClose(runs.OneProcess("plain") + ".safetensors", Path.Combine(resumed, "plain.rank0.safetensors"), atol: 1e-6);
    }
}
