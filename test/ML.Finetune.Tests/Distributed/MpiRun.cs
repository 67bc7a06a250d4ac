using System.Diagnostics;
using ML.Finetune.Checkpoints;
using ML.Finetune.Tests.Foundation;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Distributed;

/// <summary>
/// Starts test programs under Open MPI's mpirun, on this machine only: TCP over loopback between the ranks
/// (--mca btl self,tcp, interfaces lo), oversubscription allowed (2 cores), root allowed (CI runs as root).
/// </summary>
internal static class MpiRun
{
    public static readonly string? Mpirun = Environment.GetEnvironmentVariable("PATH")?.Split(Path.PathSeparator)
        .Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists);

    public static string ProbePath => BuildInfo.Get("DistributedProbePath");
    public static string SamplesPath => BuildInfo.Get("SamplesPath");

    public static readonly string[] LoopbackOptions = ["--oversubscribe", "--allow-run-as-root", "--bind-to", "none",
        "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"];

    /// <summary>`mpirun -np ranks dotnet dll args` (ranks = 0: `dotnet dll args` without mpirun).</summary>
    public static Process Start(int ranks, string dll, IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        ProcessStartInfo psi;
        if (ranks == 0) psi = new ProcessStartInfo("dotnet");
        else
        {
            psi = new ProcessStartInfo(Mpirun ?? throw new InvalidOperationException(
                "mpirun not found on PATH: install Open MPI (apt-get install openmpi-bin libopenmpi-dev; .ci/run does)"));
            foreach (var o in LoopbackOptions) psi.ArgumentList.Add(o);
            psi.ArgumentList.Add("-np"); psi.ArgumentList.Add(ranks.ToString());
            psi.ArgumentList.Add("dotnet");
        }
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.RedirectStandardOutput = psi.RedirectStandardError = true;
        psi.Environment["TERM"] = "dumb";
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    /// <summary>Runs to the end (killing the process tree after <paramref name="timeout"/>): exit code, stdout + stderr, seconds.</summary>
    public static (int ExitCode, string Output, double Seconds) Run(int ranks, string dll, IEnumerable<string> args,
        TimeSpan timeout, IDictionary<string, string>? env = null)
    {
        var sw = Stopwatch.StartNew();
        using var p = Start(ranks, dll, args, env);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            throw new TimeoutException($"{(ranks > 0 ? $"mpirun -np {ranks} " : "")}{Path.GetFileName(dll)} {string.Join(' ', args)} " +
                                       $"did not finish within {timeout.TotalSeconds} s (a hang):\n{stdout.Result}\n{stderr.Result}");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr.Result, sw.Elapsed.TotalSeconds);
    }

    public static string RunOk(int ranks, string dll, IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        var (code, output, _) = Run(ranks, dll, args, TimeSpan.FromMinutes(3), env);
        Assert.True(code == 0, $"{(ranks > 0 ? $"mpirun -np {ranks} " : "")}{Path.GetFileName(dll)} failed ({code}):\n{output}");
        return output;
    }

    public static Dictionary<string, Tensor> Load(string path)
    {
        var d = ML.Finetune.Checkpoints.SafeTensors.Load(path);
        foreach (var t in d.Values) t.DetachFromDisposeScope();
        return d;
    }

    /// <summary>Same names and shapes, and |a − b| ≤ atol everywhere; returns the largest difference.</summary>
    public static double AssertClose(string a, string b, double atol)
    {
        var x = Load(a); var y = Load(b);
        try
        {
            Assert.Equal(x.Keys.OrderBy(k => k), y.Keys.OrderBy(k => k));
            double worst = 0;
            foreach (var k in x.Keys)
            {
                Assert.Equal(x[k].shape, y[k].shape);
                double d = x[k].to_type(ScalarType.Float64).sub(y[k].to_type(ScalarType.Float64)).abs().max().item<double>();
                Assert.True(d <= atol, $"{Path.GetFileName(a)} vs {Path.GetFileName(b)}: tensor {k} differs by {d:G3} > {atol:G3}");
                worst = Math.Max(worst, d);
            }
            return worst;
        }
        finally { foreach (var t in x.Values.Concat(y.Values)) t.Dispose(); }
    }

    public static void AssertBitwiseEqual(string a, string b)
    {
        var x = Load(a); var y = Load(b);
        try
        {
            Assert.Equal(x.Keys.OrderBy(k => k), y.Keys.OrderBy(k => k));
            foreach (var k in x.Keys) Assert.True(x[k].eq(y[k]).all().item<bool>(), $"{Path.GetFileName(a)} vs {Path.GetFileName(b)}: tensor {k} is not bitwise equal");
        }
        finally { foreach (var t in x.Values.Concat(y.Values)) t.Dispose(); }
    }
}

/// <summary>
/// A test that starts mpirun. Skipped when Open MPI is not installed, except in CI (CI set), where it runs and fails
/// loudly, since .ci/run installs Open MPI.
/// </summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute()
    {
        if (MpiRun.Mpirun is null && Environment.GetEnvironmentVariable("CI") is null)
            Skip = "Open MPI is not installed (apt-get install openmpi-bin libopenmpi-dev); .ci/run installs it.";
    }
}

public sealed class MpiTheoryAttribute : TheoryAttribute
{
    public MpiTheoryAttribute()
    {
        if (MpiRun.Mpirun is null && Environment.GetEnvironmentVariable("CI") is null)
            Skip = "Open MPI is not installed (apt-get install openmpi-bin libopenmpi-dev); .ci/run installs it.";
    }
}

/// <summary>The mpirun tests run one at a time (each starts several processes on a 2-core machine).</summary>
[CollectionDefinition("mpirun", DisableParallelization = true)]
public sealed class MpirunCollection : ICollectionFixture<ProbeRuns> { }
