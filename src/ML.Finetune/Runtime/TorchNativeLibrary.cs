using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ML.Finetune.Build;
using TorchSharp;

namespace ML.Finetune.Runtime;

/// <summary>Thrown when TorchSharp's native libraries cannot be loaded; the message names the real cause and the fix.</summary>
public sealed class TorchNativeLoadException : InvalidOperationException
{
    public TorchNativeLoadException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// Makes TorchSharp's native glue library (<c>libLibTorchSharp.so</c>) load, and names the real cause when it cannot.
/// <para>TorchSharp 0.107's glue library asks for <c>GLIBCXX_3.4.32</c> (GCC 13's libstdc++) for one symbol nothing
/// calls; Debian 12 and Ubuntu 22.04 ship GCC 12's libstdc++, which stops at 3.4.30. The build marks that need weak in
/// the app's output copy (build/ML.Finetune.Native.targets). An app whose copy was not patched (a ProjectReference
/// from outside this repository, a build with MLFinetuneSkipNativePatch) gets the same fix here at run time: before
/// TorchSharp first loads, a patched image of the glue library is written to an anonymous in-memory file (memfd, nothing
/// touches the disk) and loaded; TorchSharp's own load then finds it by its soname. Set the environment variable
/// <c>MLFINETUNE_NATIVE_FIX=0</c> to turn this off.</para>
/// <para>TorchSharp's own error for this case ("doesn't contain a reference to libtorch-cpu-linux-x64") names the wrong
/// cause, and its static constructor fails for the rest of the process. <see cref="EnsureLoaded"/> (called by the
/// estimators and the model loader before they touch TorchSharp) throws a <see cref="TorchNativeLoadException"/> naming
/// the missing version, the file and the fix instead.</para>
/// </summary>
public static class TorchNativeLibrary
{
    public const string GlibcxxVersion = "GLIBCXX_3.4.32";
    /// <summary>Environment variable: "0" (or "false", "off") disables the run-time fix.</summary>
    public const string FixVariable = "MLFINETUNE_NATIVE_FIX";
    const string GlueFile = "libLibTorchSharp.so";

    static readonly Lazy<string?> Problem = new(Prepare, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>How the glue library was made loadable in this process (for diagnostics and tests).</summary>
    public static string State { get; private set; } = "not checked";

    // Runs before any code of this library, so the fix is in place before any of it can touch TorchSharp (whose static
    // constructor fails for good once it has failed). It never throws: a problem is kept for EnsureLoaded to report.
#pragma warning disable CA2255 // a library module initializer: here it is the only hook that precedes every entry point
    [ModuleInitializer]
    internal static void OnModuleLoad() => _ = Problem.Value;
#pragma warning restore CA2255

    /// <summary>Loads TorchSharp's native backend or throws a <see cref="TorchNativeLoadException"/> that names why not.</summary>
    public static void EnsureLoaded()
    {
        if (Problem.Value is { } problem) throw new TorchNativeLoadException(problem);
        try { torch.InitializeDeviceType(DeviceType.CPU); }
        catch (Exception e) when (e is TypeInitializationException or NotSupportedException or DllNotFoundException)
        {
            throw new TorchNativeLoadException(Describe(e), e);
        }
    }

    /// <summary>Null when TorchSharp can load (or this is not Linux); otherwise the message EnsureLoaded throws.</summary>
    static string? Prepare()
    {
        try
        {
            if (!OperatingSystem.IsLinux()) { State = "not Linux"; return null; }
            string? glue = FindGlue();
            if (glue is null) { State = "no glue library found"; return null; } // TorchSharp reports it; Describe explains
            // No libtorch next to the glue: the app references no backend. Patching cannot help; TorchSharp may still find
            // one in the NuGet cache (its fallback), and Describe names the missing package if it does not.
            if (!HasBackend(glue)) { State = "no libtorch backend next to " + glue; return null; }
            byte[] image = File.ReadAllBytes(glue);
            long flagsAt = ElfVersionNeedPatcher.FindVernauxFlagsOffset(image, GlibcxxVersion, glue);
            if (flagsAt < 0 || (BitConverter.ToUInt16(image, (int)flagsAt) & ElfVersionNeedPatcher.VerFlagWeak) != 0)
            {
                State = "patched by the build"; return null;
            }
            if (ElfVersionNeedPatcher.SystemLibStdCxxHas(GlibcxxVersion)) { State = "system libstdc++ has " + GlibcxxVersion; return null; }
            if (IsOff(Environment.GetEnvironmentVariable(FixVariable)))
            {
                State = "unpatched, run-time fix off";
                return GlibcxxMessage(glue, $"the run-time fix is off ({FixVariable}={Environment.GetEnvironmentVariable(FixVariable)})");
            }
            image[flagsAt] |= (byte)ElfVersionNeedPatcher.VerFlagWeak;
            string? error = LoadPatchedImage(glue, image);
            if (error is null) { State = "patched at run time"; return null; }
            State = "run-time fix failed";
            return GlibcxxMessage(glue, "the run-time fix failed: " + error);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            State = "check failed: " + e.Message;
            return null; // leave it to TorchSharp; EnsureLoaded still explains a failure
        }
    }

    static bool HasBackend(string glue) => File.Exists(Path.Combine(Path.GetDirectoryName(glue)!, "libtorch_cpu.so"));

    static bool IsOff(string? v) => v is not null && (v == "0" || v.Equals("false", StringComparison.OrdinalIgnoreCase) || v.Equals("off", StringComparison.OrdinalIgnoreCase));

    /// <summary>The glue library the runtime would load: the app's native search folders, then TorchSharp.dll's folder.</summary>
    static string? FindGlue()
    {
        var dirs = new List<string>();
        if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string search)
            dirs.AddRange(search.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries));
        string torchDir = Path.GetDirectoryName(typeof(torch).Assembly.Location) ?? AppContext.BaseDirectory;
        dirs.Add(torchDir);
        dirs.Add(Path.Combine(torchDir, "runtimes", "linux-x64", "native"));
        return dirs.Select(d => Path.Combine(d, GlueFile)).FirstOrDefault(File.Exists);
    }

    /// <summary>Loads the patched image from a memfd after its dependencies (from the original folder, so $ORIGIN does not matter).</summary>
    static string? LoadPatchedImage(string glue, byte[] image)
    {
        string dir = Path.GetDirectoryName(glue)!;
        try
        {
            foreach (var dep in new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" })
                if (File.Exists(Path.Combine(dir, dep))) NativeLibrary.Load(Path.Combine(dir, dep));
            int fd = MemfdCreate("libLibTorchSharp-weak-glibcxx", 1 /* MFD_CLOEXEC */);
            if (fd < 0) return $"memfd_create failed (errno {Marshal.GetLastPInvokeError()})";
            // The stream owns the descriptor and closes it on dispose; the loaded library stays mapped after that.
            using var memfd = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true), FileAccess.Write);
            memfd.Write(image);
            memfd.Flush();
            NativeLibrary.Load($"/proc/self/fd/{fd}");
            return null;
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException or IOException or EntryPointNotFoundException)
        {
            return e.Message;
        }
    }

    [DllImport("libc", EntryPoint = "memfd_create", SetLastError = true)]
    static extern int MemfdCreate(string name, uint flags);

    static string GlibcxxMessage(string glue, string why) =>
        $"TorchSharp's native library '{glue}' needs {GlibcxxVersion} (GCC 13's libstdc++), which this system's libstdc++ lacks " +
        $"(Debian 12 and Ubuntu 22.04 ship GCC 12's, up to GLIBCXX_3.4.30). Only one symbol that nothing calls needs it, and " +
        $"ML.Finetune marks that need weak: at build time in the app's output copy (build/ML.Finetune.Native.targets, which the " +
        $"ML.Finetune package applies through buildTransitive) or at run time; here {why}. Fix: unset {FixVariable}, or build " +
        "the app with the ML.Finetune package, or add <Import Project=\"<ML.Finetune repo>/build/ML.Finetune.Native.targets\" /> " +
        "to its project file and rebuild, or install a libstdc++ from GCC 13 or newer.";

    /// <summary>The real cause behind a TorchSharp load failure.</summary>
    static string Describe(Exception e)
    {
        string first = (e.InnerException ?? e).Message.Split('\n')[0];
        try { return DescribeCore(first); }
        catch (Exception io) when (io is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            return $"TorchSharp's native backend failed to load: {first}";
        }
    }

    static string DescribeCore(string first)
    {
        string? glue = OperatingSystem.IsLinux() ? FindGlue() : null;
        if (OperatingSystem.IsLinux() && (glue is null || !HasBackend(glue)))
            return "TorchSharp's native backend (libtorch) was not found next to the app " +
                   (glue is null ? "(no libLibTorchSharp.so in its native search folders). " : $"('{Path.GetDirectoryName(glue)}' has no libtorch_cpu.so). ") +
                   "ML.Finetune, like Microsoft.ML.TorchSharp, leaves the backend to the app: add a PackageReference to " +
                   "libtorch-cpu-linux-x64 2.10.0 (Linux x64), TorchSharp-cpu 0.107.0 (any OS) or TorchSharp-cuda-linux 0.107.0, " +
                   $"and rebuild. TorchSharp said: {first}";
        if (glue is not null)
        {
            byte[] image = File.ReadAllBytes(glue);
            long at = ElfVersionNeedPatcher.FindVernauxFlagsOffset(image, GlibcxxVersion, glue);
            if (at >= 0 && (BitConverter.ToUInt16(image, (int)at) & ElfVersionNeedPatcher.VerFlagWeak) == 0
                && !ElfVersionNeedPatcher.SystemLibStdCxxHas(GlibcxxVersion))
                return GlibcxxMessage(glue, "TorchSharp was used before ML.Finetune could apply its run-time fix");
            try { NativeLibrary.Free(NativeLibrary.Load(glue)); }
            catch (DllNotFoundException d) { return $"TorchSharp's native library '{glue}' failed to load: {d.Message}"; }
        }
        return $"TorchSharp's native backend failed to load: {first}";
    }
}
