using ML.Finetune.Build;

namespace ML.Finetune.Tests.Foundation;

/// <summary>The build's ELF patch (build/MarkGlibcxxWeakTask.cs) on a copy of the real libLibTorchSharp.so.</summary>
public class NativeLoadPatchTests
{
    private const string Version = "GLIBCXX_3.4.32";

    private static string CachedGlueLibrary()
    {
        string path = Path.Combine(BuildInfo.NuGetPackageRoot, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.True(File.Exists(path), $"TorchSharp's native glue library was not found at {path}");
        return path;
    }

    [Fact]
    public void Patch_ChangesOnlyTheWeakFlagBitOfTheGlibcxxEntry_AndIsIdempotent()
    {
        if (!OperatingSystem.IsLinux()) return; // the library under test is the linux-x64 one
        string original = CachedGlueLibrary();
        string dir = Directory.CreateTempSubdirectory("mlft-elf").FullName;
        try
        {
            string copy = Path.Combine(dir, "libLibTorchSharp.so");
            File.Copy(original, copy);
            byte[] before = File.ReadAllBytes(copy);
            long flagsAt = ElfVersionNeedPatcher.FindVernauxFlagsOffset(before, Version, copy);
            Assert.True(flagsAt > 0, "the GLIBCXX_3.4.32 need was not found");
            Assert.Equal(0, BitConverter.ToUInt16(before, (int)flagsAt) & ElfVersionNeedPatcher.VerFlagWeak);

            Assert.Equal(ElfVersionNeedPatcher.Outcome.Patched, ElfVersionNeedPatcher.MarkWeak(copy, Version));
            byte[] after = File.ReadAllBytes(copy);
            Assert.Equal(before.Length, after.Length);
            var changed = Enumerable.Range(0, before.Length).Where(i => before[i] != after[i]).ToArray();
            Assert.Equal(new[] { (int)flagsAt }, changed); // only the low byte of vna_flags
            Assert.Equal(ElfVersionNeedPatcher.VerFlagWeak, (byte)(before[flagsAt] ^ after[flagsAt]));

            Assert.Equal(ElfVersionNeedPatcher.Outcome.AlreadyWeak, ElfVersionNeedPatcher.MarkWeak(copy, Version));
            Assert.Equal(after, File.ReadAllBytes(copy));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Build_PatchedTheOutputCopy_AndLeftTheNuGetCacheUntouched()
    {
        if (!OperatingSystem.IsLinux() || ElfVersionNeedPatcher.SystemLibStdCxxHas(Version)) return; // nothing to patch here
        string output = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        byte[] outBytes = File.ReadAllBytes(output);
        byte[] cacheBytes = File.ReadAllBytes(CachedGlueLibrary());
        long at = ElfVersionNeedPatcher.FindVernauxFlagsOffset(outBytes, Version, output);
        Assert.NotEqual(0, BitConverter.ToUInt16(outBytes, (int)at) & ElfVersionNeedPatcher.VerFlagWeak);
        Assert.Equal(0, BitConverter.ToUInt16(cacheBytes, (int)at) & ElfVersionNeedPatcher.VerFlagWeak);
        // And it is the copy TorchSharp loaded: a tensor op works in this process.
        Assert.Equal(6f, TorchSharp.torch.tensor(new float[] { 1, 2, 3 }).sum().item<float>());
    }

    [Fact]
    public void Patcher_RejectsNonElfInput_WithTheFileName()
    {
        var ex = Assert.Throws<InvalidDataException>(() => ElfVersionNeedPatcher.FindVernauxFlagsOffset(new byte[100], Version, "not-a-lib.so"));
        Assert.Contains("not-a-lib.so", ex.Message);
    }
}
