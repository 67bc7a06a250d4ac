using System.Diagnostics;
using ML.Finetune.Build;
using ML.Finetune.Runtime;

namespace ML.Finetune.Tests.Foundation;

/// <summary>
/// An app whose copy of libLibTorchSharp.so was never patched (what a ProjectReference from outside this repository
/// gets): the library patches it at run time, and with that fix turned off it names the real cause instead of
/// TorchSharp's "doesn't contain a reference to libtorch-cpu-linux-x64".
/// </summary>
public class NativeLoadRuntimeFixTests
{
    static bool Applies => OperatingSystem.IsLinux() && !ElfVersionNeedPatcher.SystemLibStdCxxHas(TorchNativeLibrary.GlibcxxVersion);

    /// <summary>A copy of the load probe's output folder (big files linked) whose glue library is NuGet's unpatched one.</summary>
    static string UnpatchedProbe(string dir)
    {
        string source = Path.GetDirectoryName(BuildInfo.LoadProbePath)!;
        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(dir, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            if (new FileInfo(file).Length > 4 << 20) File.CreateSymbolicLink(target, file);
            else File.Copy(file, target);
        }
        string glue = Path.Combine(dir, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        File.Delete(glue);
        File.Copy(Path.Combine(BuildInfo.NuGetPackageRoot, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so"), glue);
        long at = ElfVersionNeedPatcher.FindVernauxFlagsOffset(File.ReadAllBytes(glue), TorchNativeLibrary.GlibcxxVersion, glue);
        Assert.Equal(0, BitConverter.ToUInt16(File.ReadAllBytes(glue), (int)at) & ElfVersionNeedPatcher.VerFlagWeak);
        return Path.Combine(dir, Path.GetFileName(BuildInfo.LoadProbePath));
    }

    static (int Exit, string Out, string Err) Run(string probe, string? fixVariable, string? nugetPackages = null)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add(probe);
        psi.ArgumentList.Add("native-check");
        psi.Environment.Remove(TorchNativeLibrary.FixVariable);
        if (fixVariable != null) psi.Environment[TorchNativeLibrary.FixVariable] = fixVariable;
        if (nugetPackages != null) psi.Environment["NUGET_PACKAGES"] = nugetPackages; // where TorchSharp's fallback looks
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "the probe did not finish in 2 minutes");
        return (p.ExitCode, output, err.Result);
    }

    [Fact]
    public void UnpatchedCopy_IsPatchedAtRunTime_AndWithTheFixOff_TheErrorNamesTheMissingVersion()
    {
        if (!Applies) return; // the system libstdc++ has GLIBCXX_3.4.32: nothing to fix
        string dir = Fixtures.TempDir();
        try
        {
            string probe = UnpatchedProbe(dir);
            var (exit, output, err) = Run(probe, null);
            Assert.True(exit == 0, $"exit {exit}: {err}");
            Assert.Contains("state: patched at run time", output);
            Assert.Contains("sum: 3", output);

            (exit, output, err) = Run(probe, "0");
            Assert.Equal(1, exit);
            Assert.Contains("GLIBCXX_3.4.32", err);
            Assert.Contains(Path.Combine(dir, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"), err);
            Assert.Contains("MLFINETUNE_NATIVE_FIX=0", err);
            Assert.Contains("ML.Finetune.Native.targets", err);
            Assert.DoesNotContain("doesn't contain a reference", err + output);
            Assert.False(Directory.Exists(Path.Combine(dir, "cpu")), "TorchSharp ran its NuGet-cache fallback (it copies libtorch into cpu/)");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AppWithoutALibtorchBackend_IsToldWhichPackageToAdd()
    {
        if (!OperatingSystem.IsLinux()) return;
        string dir = Fixtures.TempDir();
        try
        {
            string probe = UnpatchedProbe(dir);
            string native = Path.Combine(dir, "runtimes", "linux-x64", "native");
            foreach (var lib in Directory.GetFiles(native, "libtorch*")) File.Delete(lib); // as if the app referenced no backend package
            var (exit, output, err) = Run(probe, null, nugetPackages: Path.Combine(dir, "no-packages"));
            Assert.Equal(1, exit);
            Assert.Contains($"TorchSharp's native backend (libtorch) was not found next to the app ('{native}' has no libtorch_cpu.so)", err);
            Assert.Contains("add a PackageReference to libtorch-cpu-linux-x64 2.10.0", err);
            Assert.DoesNotContain("GLIBCXX", err);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void BuildPatchedCopy_NeedsNoRunTimeFix()
    {
        if (!Applies) return;
        var (exit, output, err) = Run(BuildInfo.LoadProbePath, null);
        Assert.True(exit == 0, $"exit {exit}: {err}");
        Assert.Contains("state: patched by the build", output);
    }
}
