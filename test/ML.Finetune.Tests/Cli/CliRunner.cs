using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using ML.Finetune.Samples.Cli;
using ML.Finetune.Tests.Estimators;
using ML.Finetune.Tests.Foundation;

namespace ML.Finetune.Tests.Cli;

/// <summary>
/// Runs the samples CLI on temp folders: as a child process (`dotnet ML.Finetune.Samples.dll`, what a user runs: exit
/// codes, signals, redirected output) or in-process through <see cref="Commands.Run"/> (fast, for most argument rules).
/// </summary>
internal static class CliRunner
{
    public sealed record Result(int ExitCode, string Out, string Err)
    {
        public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Out}\n--- stderr\n{Err}";
    }

    public static string SamplesDll => BuildInfo.Get("SamplesPath");

    public static Result InProcess(params string[] args)
    {
        var err = new StringWriter();
        var output = new StringWriter();
        int code = Commands.Run(args, err, output);
        return new Result(code, output.ToString(), err.ToString());
    }

    public static Process Start(string workingDirectory, IEnumerable<string> args, IDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workingDirectory, UseShellExecute = false,
        };
        psi.ArgumentList.Add(SamplesDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["MLFT_THREADS"] = "1";
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    public static Result Child(string workingDirectory, params string[] args) => Child(workingDirectory, args, null);

    public static Result Child(string workingDirectory, IEnumerable<string> args, IDictionary<string, string>? environment)
    {
        using var p = Start(workingDirectory, args, environment);
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(180_000), "the CLI did not finish within 3 minutes");
        return new Result(p.ExitCode, output, err.Result);
    }

    /// <summary>A failure as the CLI must report it: the exit code, `error: …` lines naming what is expected, no stack trace.</summary>
    public static void AssertError(Result r, int exitCode, params string[] expected)
    {
        Assert.True(r.ExitCode == exitCode, r.ToString());
        var errorLines = r.Err.Split('\n').Where(l => l.StartsWith("error: ")).ToList();
        Assert.True(errorLines.Count == 1, r.ToString());
        foreach (var e in expected) Assert.True(errorLines[0].Contains(e, StringComparison.Ordinal), $"'{e}' missing from: {errorLines[0]}");
        Assert.DoesNotContain("   at ", r.Err);
        Assert.DoesNotContain("Exception:", r.Err);
    }

    /// <summary>Prompt/completion pairs of the tiny word model as JSONL.</summary>
    public static string WriteData(string folder, string name = "train.jsonl", IEnumerable<(string Prompt, string Completion)>? rows = null)
    {
        string path = Path.Combine(folder, name);
        File.WriteAllLines(path, (rows ?? TinyWordModel.Facts.Select(f => (f.Prompt, f.Completion)))
            .Select(r => JsonSerializer.Serialize(new { prompt = r.Prompt, completion = r.Completion })));
        return path;
    }

    /// <summary>Every file under <paramref name="folder"/> (relative path → bytes), to prove a command left it alone.</summary>
    public static Dictionary<string, byte[]> Snapshot(string folder) =>
        Directory.GetFiles(folder, "*", SearchOption.AllDirectories).ToDictionary(f => Path.GetRelativePath(folder, f), File.ReadAllBytes);

    public static void AssertUnchanged(Dictionary<string, byte[]> before, string folder)
    {
        var after = Snapshot(folder);
        Assert.Equal(before.Keys.OrderBy(k => k), after.Keys.OrderBy(k => k));
        foreach (var (k, v) in before) Assert.True(v.AsSpan().SequenceEqual(after[k]), $"{k} changed");
    }

    /// <summary>Temporary folders a command may have left beside or inside <paramref name="folder"/> (none allowed).</summary>
    public static List<string> Debris(string folder) =>
        Directory.GetFileSystemEntries(folder, "*tmp*", SearchOption.AllDirectories)
            .Concat(Directory.GetFileSystemEntries(folder, "staging-*", SearchOption.AllDirectories))
            .Concat(Directory.GetFileSystemEntries(folder, "replaced-*", SearchOption.AllDirectories)).ToList();

    [DllImport("libc", SetLastError = true)]
    static extern int kill(int pid, int sig);

    public const int SIGINT = 2, SIGTERM = 15;

    /// <summary>
    /// Sends SIGINT, as Ctrl-C does; SIGTERM only where the child ignores SIGINT (a shell starts background jobs that way,
    /// and an ignored signal cannot be handled), read from /proc.
    /// </summary>
    public static int Interrupt(Process p)
    {
        int signal = IgnoresSigint(p.Id) ? SIGTERM : SIGINT;
        Assert.Equal(0, kill(p.Id, signal));
        return signal;
    }

    static bool IgnoresSigint(int pid)
    {
        string status = $"/proc/{pid}/status";
        if (!File.Exists(status)) return false;
        var line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith("SigIgn:"));
        return line != null && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << (SIGINT - 1))) != 0;
    }
}
