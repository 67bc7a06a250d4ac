using System.Globalization;
using System.Text.RegularExpressions;

namespace ML.Finetune.Tests.Cli;

/// <summary>The README's first command, as a user runs it (MLFT_RUN_SLOW=1; 2–6 minutes on a shared 2-core machine).</summary>
public class MainJobSlowTests : IDisposable
{
    readonly string _dir = Fixtures.TempDir();
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    [SlowFact]
    public void The_default_main_job_runs_through_the_cli_with_progress_and_the_readme_result()
    {
        var r = CliRunner.Child(_dir, "--out", "job");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("", r.Err);
        // Redirected output: progress lines for each of the 16 runs (6 methods × 2 inits + 4 sweep points, one reused).
        Assert.Matches(@"\[1/16\] full θ_p: step 150/150  loss \d+\.\d{4}  [\d,]+ tok/s  done in \d+:\d\d", r.Out);
        string report = File.ReadAllText(Path.Combine(_dir, "job", "report.md"));
        double Accuracy(string method, string init)
        {
            var m = Regex.Match(report, $@"^\| {Regex.Escape(method)} \| {init} \| ([\d.]+)% \|", RegexOptions.Multiline);
            Assert.True(m.Success, $"{method} {init} row");
            return double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        }
        // The README's claims: θ_p answers held-out questions under every method, θ_0 does not.
        foreach (var method in new[] { "full", "full+l2", "full+kl", "lora", "prompt", "prefix" })
        {
            Assert.True(Accuracy(method, "θ_p") >= 75, $"{method} θ_p {Accuracy(method, "θ_p")}%");
            Assert.Equal(0.0, Accuracy(method, "θ_0"));
        }
        foreach (var png in new[] { "accuracy.png", "lr_sweep.png", "loss_full.png", "loss_full_l2.png", "loss_full_kl.png" })
            Assert.True(new FileInfo(Path.Combine(_dir, "job", png)).Length > 10_000, png);
        Assert.Empty(CliRunner.Debris(_dir));
    }
}
