using System.Diagnostics;
using System.Globalization;
using ML.Finetune.Tests.Foundation;
using Xunit.Abstractions;

namespace ML.Finetune.Tests.Packaging;

/// <summary>
/// The samples CLI as a dotnet tool: `dotnet pack` makes `ml-finetune.&lt;version&gt;.nupkg`, `dotnet tool install
/// --add-source` installs it from a local folder, and the installed `ml-finetune info` loads TorchSharp (the package's
/// copy of libLibTorchSharp.so is patched when packing) and runs an autograd step.
/// </summary>
public class PackageToolTests(ITestOutputHelper output)
{
    [Fact]
    public void ToolPackage_InstallsFromALocalFolder_AndRunsInfo()
    {
        var total = Stopwatch.StartNew();
        string root = Fixtures.TempDir();
        try
        {
            string feed = Path.Combine(root, "feed"), tools = Path.Combine(root, "tools");
            string version = "0.1.0-test." + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff", CultureInfo.InvariantCulture);
            // Publishing (which the tool pack runs) goes to the temp folder, not the repository's bin.
            PackageConsumerTests.Dotnet(BuildInfo.RepoRoot, "pack", "src/ML.Finetune.Samples/ML.Finetune.Samples.csproj", "--no-build", "--no-restore",
                "-c", BuildInfo.Configuration, "-o", feed, $"-p:PackageVersion={version}", $"-p:PublishDir={Path.Combine(root, "publish")}/",
                $"-p:NuspecOutputPath={Path.Combine(root, "nuspec")}/");
            Assert.True(File.Exists(Path.Combine(feed, $"ml-finetune.{version}.nupkg")));
            Directory.Delete(Path.Combine(root, "publish"), true); // ~0.5 GB the install does not need
            output.WriteLine($"[measure] tool check: pack done at {total.Elapsed.TotalSeconds:F0} s");

            PackageConsumerTests.Dotnet(root, "tool", "install", "ml-finetune", "--tool-path", tools, "--add-source", feed, "--version", version);
            output.WriteLine($"[measure] tool check: install done at {total.Elapsed.TotalSeconds:F0} s");

            string info = Run(Path.Combine(tools, OperatingSystem.IsWindows() ? "ml-finetune.exe" : "ml-finetune"), "info");
            Assert.Matches(@"libtorch\s+2\.10\.0", info);
            Assert.Matches(@"x=1\.5 = 3\b", info); // the autograd check: d(x²)/dx at 1.5
            output.WriteLine($"[measure] tool check: info done at {total.Elapsed.TotalSeconds:F0} s");
        }
        finally { Directory.Delete(root, true); }
    }

    static string Run(string program, string argument)
    {
        using var p = Process.Start(new ProcessStartInfo(program, argument) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var err = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), $"{program} {argument} did not finish");
        Assert.True(p.ExitCode == 0, $"{program} {argument} failed ({p.ExitCode}): {stdout}{err.Result}");
        return stdout;
    }
}
