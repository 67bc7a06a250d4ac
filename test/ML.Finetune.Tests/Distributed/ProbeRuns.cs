namespace ML.Finetune.Tests.Distributed;

/// <summary>
/// The probe runs the mpirun tests share (process starts dominate their time): once under `mpirun -np 2` and once as a
/// single process, each with every job of <see cref="DataParallelEqualityTests.Jobs"/>, plus the first legs of the
/// resume test (a 2-rank run and a 1-process run that write checkpoints). Started on first use.
/// </summary>
public sealed class ProbeRuns : IDisposable
{
    public string Folder { get; } = Path.Combine(Path.GetTempPath(), "mlft-dp-" + Guid.NewGuid().ToString("N"));
    readonly Lazy<string> _twoRanksOutput;

    /// <summary>Resume jobs: GPT-2 with dropout (2 ranks, so each rank's dropout stream matters), varying lengths without dropout (1 process).</summary>
    public string ResumeDropoutJob => $"dropout:steps=6,every=2,ckpt={Path.Combine(Folder, "ck-dropout")},model=gpt2,dropout=0.1";
    public string ResumePlainJob => $"plain:steps=6,every=2,ckpt={Path.Combine(Folder, "ck-plain")},varlen=1,batch=3,n=7";

    public ProbeRuns() => _twoRanksOutput = new(() =>
    {
        string jobs = string.Join(";", DataParallelEqualityTests.Jobs.Select(j => $"{j.Key}:{j.Value}"));
        string output = MpiRun.RunOk(2, MpiRun.ProbePath, [Path.Combine(Folder, "two"), jobs + ";" + ResumeDropoutJob]);
        MpiRun.RunOk(0, MpiRun.ProbePath, [Path.Combine(Folder, "one"), jobs + ";" + ResumePlainJob]);
        return output;
    });

    /// <summary>Standard output of the 2-rank run.</summary>
    public string TwoRanksOutput => _twoRanksOutput.Value;
    /// <summary>&lt;job&gt;.rank&lt;r&gt; of the 2-rank run (.safetensors weights, .csv history).</summary>
    public string TwoRanks(string job, int rank) { _ = TwoRanksOutput; return Path.Combine(Folder, "two", $"{job}.rank{rank}"); }
    public string OneProcess(string job) { _ = TwoRanksOutput; return Path.Combine(Folder, "one", $"{job}.rank0"); }

    public void Dispose() { try { Directory.Delete(Folder, true); } catch (IOException) { } }
}
