using System.Text.RegularExpressions;
using ML.Finetune.Samples.Cli;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Tests.Estimators;
using ML.Finetune.Training;

namespace ML.Finetune.Tests.Cli;

/// <summary>Progress on redirected output, Ctrl-C at a step boundary with a checkpoint, and a bit-exact resume.</summary>
public class ProgressResumeTests : IDisposable
{
    readonly string _dir = Fixtures.TempDir();
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static readonly Regex StepLine = new(@"^step (\d+)/(\d+)  loss \d+\.\d{4}(  [\d,]+ tok/s)?(  eta \d+:\d\d|  done in \d+:\d\d)?$");

    static string[] Finetune(string data, string outDir, int steps, params string[] extra) =>
        ["finetune", "--model", TinyWordModel.Folder, "--data", data, "--method", "full", "--steps", $"{steps}", "--out", outDir, .. extra];

    [Fact]
    public void Redirected_output_gets_a_plain_progress_line_every_tenth_of_the_run()
    {
        string data = CliRunner.WriteData(_dir);
        var r = CliRunner.Child(_dir, Finetune(data, Path.Combine(_dir, "out"), 20));
        Assert.True(r.ExitCode == 0, r.ToString());
        var steps = r.Out.Split('\n').Select(l => StepLine.Match(l.TrimEnd())).Where(m => m.Success).ToList();
        Assert.Equal(new[] { 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 20 }, steps.Select(m => int.Parse(m.Groups[1].Value)));
        Assert.All(steps, m => Assert.Equal("20", m.Groups[2].Value));
        Assert.All(steps.Skip(1), m => Assert.True(m.Groups[3].Success, "tokens/s from the second line on"));
        Assert.Contains("done in", steps[^1].Value);
        Assert.Contains("eta", steps[^2].Value);
        Assert.DoesNotContain('\r', r.Out); // no bar redraws in a log
        Assert.Equal(2, ProgressReporter.Every(20));
    }

    [Fact]
    public void The_main_job_prints_progress_lines_per_run_when_redirected()
    {
        var facts = FactCorpus.Load(Commands.DefaultFacts).Take(3, 2);
        string model = Path.Combine(_dir, "m");
        Pretrainer.Run(facts, new() { Seed = 3, Steps = 4, BatchSize = 8, HiddenSize = 32, Layers = 1, Heads = 2, IntermediateSize = 64 }, model).model.Dispose();
        string factsFile = Path.Combine(_dir, "facts.tsv");
        File.WriteAllLines(factsFile, ["university\tcity\tstate\tsplit", .. facts.Facts.Select(f => $"{f.University}\t{f.City}\t{f.State}\t{f.Split}")]);
        var r = CliRunner.InProcess("--model", model, "--facts", factsFile, "--methods", "full", "--no-sweep", "--steps", "2", "--out", Path.Combine(_dir, "job"));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Matches(@"\[1/2\] full θ_p: step 2/2  loss \d+\.\d{4}", r.Out);
        Assert.Matches(@"\[2/2\] full θ_0: step 2/2  loss \d+\.\d{4}", r.Out);
        Assert.Contains("exact match after finetuning", r.Out);
    }

    /// <summary>Runs the CLI until a progress line reaches <paramref name="atStep"/>, then signals it; returns (exit code, stdout lines, stderr).</summary>
    async Task<(int Code, List<string> Out, string Err)> RunUntil(string[] args, int atStep, Action<System.Diagnostics.Process> signal)
    {
        var output = new List<string>();
        using var p = CliRunner.Start(_dir, args);
        var err = p.StandardError.ReadToEndAsync();
        bool sent = false;
        string? line;
        while ((line = p.StandardOutput.ReadLine()) != null)
        {
            output.Add(line);
            if (!sent && StepLine.Match(line) is { Success: true } m && int.Parse(m.Groups[1].Value) >= atStep) { signal(p); sent = true; }
        }
        Assert.True(p.WaitForExit(60_000));
        Assert.True(sent, string.Join('\n', output));
        return (p.ExitCode, output, await err);
    }

    /// <summary>
    /// The issue's test: interrupt a finetune child process mid-run (SIGINT, as Ctrl-C), rerun the same command, and get
    /// the weights and history of an uninterrupted run bit for bit. Before that, a crash (SIGKILL) after the step-50
    /// checkpoint: the rerun resumes there. In between, --out holds only the command's state.
    /// </summary>
    [Fact]
    public async Task Interrupted_finetune_stops_at_a_step_boundary_with_a_checkpoint_and_the_rerun_resumes_bit_exactly()
    {
        const int Steps = 400;
        string data = CliRunner.WriteData(_dir);
        string reference = Path.Combine(_dir, "reference"), resumed = Path.Combine(_dir, "resumed");
        var full = CliRunner.Child(_dir, Finetune(data, reference, Steps, "--checkpoint-every", "50"));
        Assert.True(full.ExitCode == 0, full.ToString());
        string[] args = Finetune(data, resumed, Steps, "--checkpoint-every", "50");

        string checkpoints = Path.Combine(resumed, OutputFolder.StateFolderName, "checkpoints");
        var crash = await RunUntil(args, 60, p => p.Kill());
        Assert.NotEqual(0, crash.Code);
        int crashedAt = TrainingCheckpoint.List(checkpoints).Select(d => int.Parse(Path.GetFileName(d)[5..])).Max(); // 50 unless the kill lagged
        Assert.True(crashedAt >= 50);

        var (code, output, errors) = await RunUntil(args, 110, p => CliRunner.Interrupt(p));
        Assert.True(code == CliCancellation.ExitCode, $"exit {code}\n{string.Join('\n', output)}\n{errors}");
        Assert.StartsWith("data: ", output[0]); // the detected data format, then the resume
        Assert.Equal($"resuming from the checkpoint at step {crashedAt}/{Steps} in {checkpoints}", output[1]);
        Assert.Contains("stopping at the next safe point", errors);
        var stopped = output.Select(l => Regex.Match(l, @"^stopped after step (\d+)/400; checkpoint in (.+): run the same command again to resume$"))
            .Single(m => m.Success);
        int at = int.Parse(stopped.Groups[1].Value);
        Assert.InRange(at, 111, Steps - 1);
        // Only the command's state: no outputs yet, no temporary folders beside or inside --out (a checkpoint the crash
        // cut short may lie in the checkpoint folder, skipped on resume and removed with it at the end).
        Assert.Equal([OutputFolder.StateFolderName], Directory.GetFileSystemEntries(resumed).Select(e => Path.GetFileName(e)!));
        Assert.DoesNotContain(CliRunner.Debris(_dir), d => !d.StartsWith(checkpoints + "/"));
        Assert.True(Directory.Exists(Path.Combine(resumed, OutputFolder.StateFolderName, "checkpoints", $"step-{at:D8}")), $"checkpoint of step {at}");

        // The same command with other settings does not silently throw the run away.
        var other = CliRunner.InProcess(Finetune(data, resumed, Steps, "--lr", "1e-3"));
        CliRunner.AssertError(other, 2, "interrupted finetune", $"step {at}", "lr: 0.0003 → 0.001", "--overwrite");

        var again = CliRunner.Child(_dir, Finetune(data, resumed, Steps, "--checkpoint-every", "50"));
        Assert.True(again.ExitCode == 0, again.ToString());
        Assert.Contains($"resuming from the checkpoint at step {at}/{Steps}", again.Out);
        Assert.Equal(File.ReadAllBytes(Path.Combine(reference, "hf", "model.safetensors")), File.ReadAllBytes(Path.Combine(resumed, "hf", "model.safetensors")));
        Assert.Equal(File.ReadAllText(Path.Combine(reference, "history.csv")), File.ReadAllText(Path.Combine(resumed, "history.csv")));
        // Finished: the checkpoints are gone, the outputs are there.
        Assert.False(Directory.Exists(Path.Combine(resumed, OutputFolder.StateFolderName, "checkpoints")));
        Assert.Empty(CliRunner.Debris(_dir));
    }
}
