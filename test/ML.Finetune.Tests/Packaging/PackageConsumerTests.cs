using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using ML.Finetune.Build;
using ML.Finetune.Runtime;
using ML.Finetune.Tests.Estimators;
using ML.Finetune.Tests.Foundation;
using Xunit.Abstractions;

namespace ML.Finetune.Tests.Packaging;

/// <summary>
/// The NuGet package as a user outside this repository takes it: `dotnet pack`, then a fresh console app in a temp folder
/// that references ML.Finetune by PackageReference from a local folder feed (its nuget.config adds that folder and
/// inherits the machine's sources), builds, LoRA-finetunes a few rows, saves, loads in a new process and predicts with a
/// PredictionEngine, then `dotnet publish` and runs the published app. The package's buildTransitive targets must patch
/// TorchSharp's native library in the app's build and publish output.
/// </summary>
public class PackageConsumerTests(ITestOutputHelper output)
{
    static bool GlibcxxFixApplies => OperatingSystem.IsLinux() && !ElfVersionNeedPatcher.SystemLibStdCxxHas(TorchNativeLibrary.GlibcxxVersion);

    /// <summary>The backend the app adds (the package leaves it to the app, as Microsoft.ML.TorchSharp does).</summary>
    static string Backend => OperatingSystem.IsLinux() && System.Runtime.InteropServices.RuntimeInformation.OSArchitecture == System.Runtime.InteropServices.Architecture.X64
        ? "<PackageReference Include=\"libtorch-cpu-linux-x64\" Version=\"2.10.0\" />"
        : "<PackageReference Include=\"TorchSharp-cpu\" Version=\"0.107.0\" />";

    static string Project(string packageVersion, bool withBackend) => $"""
        <Project Sdk="Microsoft.NET.Sdk">
          <PropertyGroup>
            <OutputType>Exe</OutputType>
            <TargetFramework>net10.0</TargetFramework>
            <Nullable>enable</Nullable>
            <ImplicitUsings>enable</ImplicitUsings>
          </PropertyGroup>
          <ItemGroup>
            <PackageReference Include="ML.Finetune" Version="{packageVersion}" />
            {(withBackend ? Backend : "")}
          </ItemGroup>
        </Project>
        """;

    /// <summary>Adds the local feed to the machine's sources (named by nothing but their config); packages the machine
    /// already has are read from its global folder (a fallback folder), new ones go to a private folder of this test.</summary>
    static string NuGetConfig(string feed, string packages) => $"""
        <?xml version="1.0" encoding="utf-8"?>
        <configuration>
          <config><add key="globalPackagesFolder" value="{packages}" /></config>
          <packageSources><add key="ml-finetune-local" value="{feed}" /></packageSources>
          <fallbackPackageFolders><add key="machine" value="{BuildInfo.NuGetPackageRoot}" /></fallbackPackageFolders>
        </configuration>
        """;

    [Fact]
    public void Package_InAFreshConsoleApp_FitsSavesLoadsPredictsAndPublishes()
    {
        var total = Stopwatch.StartNew();
        string root = Fixtures.TempDir();
        try
        {
            string feed = Directory.CreateDirectory(Path.Combine(root, "feed")).FullName;
            string app = Directory.CreateDirectory(Path.Combine(root, "app")).FullName;
            string version = "0.1.0-test." + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff", CultureInfo.InvariantCulture);

            // 1. Pack (the test run already built the library).
            Dotnet(BuildInfo.RepoRoot, "pack", "src/ML.Finetune/ML.Finetune.csproj", "--no-build", "--no-restore", "-c", BuildInfo.Configuration,
                "-o", feed, $"-p:PackageVersion={version}", $"-p:NuspecOutputPath={Path.Combine(root, "nuspec")}/");
            string nupkg = Path.Combine(feed, $"ML.Finetune.{version}.nupkg");
            using (var zip = ZipFile.OpenRead(nupkg))
            {
                var entries = zip.Entries.Select(e => e.FullName).ToHashSet();
                Assert.Contains("lib/net10.0/ML.Finetune.dll", entries);
                Assert.Contains("buildTransitive/ML.Finetune.targets", entries);
                Assert.Contains("buildTransitive/ML.Finetune.Native.targets", entries);
                Assert.Contains("buildTransitive/MarkGlibcxxWeakTask.cs", entries);
                using var nuspec = new StreamReader(zip.GetEntry("ML.Finetune.nuspec")!.Open());
                string spec = nuspec.ReadToEnd();
                Assert.Contains("id=\"TorchSharp\"", spec);
                Assert.DoesNotContain("<dependency id=\"libtorch", spec); // the backend is the app's choice
                Assert.DoesNotContain("<dependency id=\"TorchSharp-", spec);
            }
            Measure("pack", total);

            // 2. A fresh console app taking the package from the local feed.
            File.WriteAllText(Path.Combine(root, "nuget.config"), NuGetConfig(feed, Path.Combine(root, "packages")));
            foreach (var stop in new[] { "Directory.Build.props", "Directory.Build.targets" }) // nothing above the temp folder applies
                File.WriteAllText(Path.Combine(root, stop), "<Project />");
            File.WriteAllText(Path.Combine(app, "Consumer.csproj"), Project(version, withBackend: true));
            File.Copy(Path.Combine(AppContext.BaseDirectory, "Packaging", "Consumer", "Program.cs"), Path.Combine(app, "Program.cs"));
            string build = Dotnet(app, "build");
            Assert.DoesNotContain("MLFT001", build);
            string binGlue = Path.Combine(app, "bin", "Debug", "net10.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
            if (GlibcxxFixApplies) Assert.True(IsWeak(binGlue), "buildTransitive did not patch the app's build output");
            Measure("restore + build", total);

            // 3. Fit LoRA, save, Transform; then a new process loads and predicts row by row.
            string consumer = Path.Combine(app, "bin", "Debug", "net10.0", "Consumer.dll"), model = Path.Combine(root, "model.zip");
            var trained = Lines(Dotnet(app, consumer, "train", TinyWordModel.Folder, model));
            var predicted = Lines(Dotnet(app, consumer, "predict", model));
            if (GlibcxxFixApplies) Assert.Equal("native: patched by the build", trained[0]);
            Assert.Equal(trained[0], predicted[0]);
            AssertSameRows(trained.Skip(1).ToList(), predicted.Skip(1).ToList());
            Assert.Contains(trained.Skip(1), l => l.Split('\t')[0].Length > 0);
            Measure("train + save, load + predict", total);

            // 4. dotnet publish: the published copy is patched too, and the published app predicts the same.
            string publish = Path.Combine(root, "publish");
            Dotnet(app, "publish", "--no-build", "-c", "Debug", "-o", publish);
            Assert.True(IsWeak(Path.Combine(publish, "runtimes", "linux-x64", "native", "libLibTorchSharp.so")) || !OperatingSystem.IsLinux(),
                "the published libLibTorchSharp.so was not patched");
            var published = Lines(Dotnet(app, Path.Combine(publish, "Consumer.dll"), "predict", model));
            Assert.Equal(predicted, published);
            Measure("publish + run", total);

            // 5. An app that forgot the backend is told at build time what to add.
            string bare = Directory.CreateDirectory(Path.Combine(root, "bare")).FullName;
            File.WriteAllText(Path.Combine(bare, "Bare.csproj"), Project(version, withBackend: false));
            string bareBuild = Dotnet(bare, "msbuild", "-restore", "-t:ResolvePackageAssets"); // resolving assets is enough
            Assert.Contains("warning MLFT001: ML.Finetune needs a libtorch native backend, and Bare references none.", bareBuild);
            Measure("backend check", total);
        }
        finally { Directory.Delete(root, true); }
    }

    void Measure(string step, Stopwatch total) => output.WriteLine($"[measure] packaging check: {step} done at {total.Elapsed.TotalSeconds:F0} s");

    static bool IsWeak(string glue)
    {
        byte[] b = File.ReadAllBytes(glue);
        long at = ElfVersionNeedPatcher.FindVernauxFlagsOffset(b, TorchNativeLibrary.GlibcxxVersion, glue);
        return at >= 0 && (BitConverter.ToUInt16(b, (int)at) & ElfVersionNeedPatcher.VerFlagWeak) != 0;
    }

    static List<string> Lines(string text) => text.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.Length > 0).ToList();

    /// <summary>Same text; scores equal up to float rounding (a batch of one instead of a padded batch).</summary>
    static void AssertSameRows(List<string> expected, List<string> actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            var e = expected[i].Split('\t'); var a = actual[i].Split('\t');
            Assert.Equal(e[0], a[0]);
            for (int k = 1; k < 3; k++)
            {
                double x = double.Parse(e[k], CultureInfo.InvariantCulture), y = double.Parse(a[k], CultureInfo.InvariantCulture);
                Assert.True(Math.Abs(x - y) <= 1e-4 * Math.Max(1, Math.Abs(x)), $"row {i}: {expected[i]} vs {actual[i]}");
            }
        }
    }

    /// <summary>Runs dotnet (a command or an app dll) and returns stdout + stderr; fails with them on a non-zero exit.</summary>
    internal static string Dotnet(string workingDirectory, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (args[0] is "build" or "pack" or "publish" or "msbuild") { psi.ArgumentList.Add("-nodeReuse:false"); psi.ArgumentList.Add("--disable-build-servers"); }
        // Nothing of the test host's own MSBuild/test environment leaks into the child build.
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase) || k.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase)).ToList())
            psi.Environment.Remove(key);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(600_000), $"dotnet {string.Join(' ', args)} did not finish in 10 minutes");
        string all = stdout + err.Result;
        Assert.True(p.ExitCode == 0, $"dotnet {string.Join(' ', args)} failed ({p.ExitCode}):\n{all}");
        return args[0] is "build" or "pack" or "publish" or "msbuild" ? all : stdout;
    }
}
