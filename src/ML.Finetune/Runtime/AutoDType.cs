using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using ML.Finetune.Estimators;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Runtime;

/// <summary>The CPU's bf16 matrix hardware as CPUID reports it (x86-64 only).</summary>
/// <param name="Avx512Bf16">AVX512_BF16 (vdpbf16ps), usable: CPUID.(7,1):EAX[5] and the OS saves AVX-512 state.</param>
/// <param name="AmxBf16">AMX-BF16 tile dot products: CPUID.(7,0):EDX[22], with AVX-512 state enabled.</param>
/// <param name="Source">How it was found out, for messages.</param>
public sealed record CpuBf16Features(bool Avx512Bf16, bool AmxBf16, string Source)
{
    /// <summary>This machine's features: CPUID through .NET's X86Base.CpuId (no timing, no cache needed).</summary>
    public static CpuBf16Features Detect() => Detected.Value;

    static readonly Lazy<CpuBf16Features> Detected = new(() =>
    {
        if (!X86Base.IsSupported) return new(false, false, $"{RuntimeInformation.ProcessArchitecture} CPU (bf16 detection is x86-64 only)");
        bool avx512 = Avx512F.IsSupported; // the runtime checks the OS enables ZMM state (XCR0), as oneDNN needs
        var (maxLeaf, _, _, _) = X86Base.CpuId(0, 0);
        if (maxLeaf < 7) return new(false, false, "CPUID (no leaf 7)");
        var (maxSub7, _, _, edx7) = X86Base.CpuId(7, 0);
        bool bf16 = maxSub7 >= 1 && (X86Base.CpuId(7, 1).Eax & (1 << 5)) != 0;
        bool amx = (edx7 & (1 << 22)) != 0;
        return new(avx512 && bf16, avx512 && amx, "CPUID");
    });
}

/// <summary>A resolved compute dtype and the reason, as <c>info</c> prints it.</summary>
public sealed record DTypeChoice(ScalarType DType, FinetuneDType Option, string Reason);

/// <summary>
/// <see cref="FinetuneDType.Auto"/>: bf16 where the hardware computes it natively (CUDA; x86 CPUs with AVX512_BF16 or
/// AMX-BF16, where oneDNN's bf16 GEMM runs about 3x faster than float32), float32 elsewhere. Without those
/// instructions libtorch converts bf16 to float32 around every kernel: measured about 7x slower than float32 on an
/// AVX2-only AMD EPYC (Zen 3), for TorchSharp and PyTorch alike, so bf16 is never picked blindly.
/// <para>Why CPUID rather than a timing probe: the decision must be cheap, the same on every run (results differ
/// between dtypes), and not flip on a loaded machine, where a short matmul benchmark measures the neighbours.</para>
/// </summary>
public static class AutoDType
{
    /// <summary>The dtype for <paramref name="requested"/> on <paramref name="device"/> (Float32/BFloat16 are kept as asked).</summary>
    public static DTypeChoice Resolve(FinetuneDType requested, Device? device) =>
        Resolve(requested, device?.type == DeviceType.CUDA, CpuBf16Features.Detect());

    /// <summary>The decision itself, with the device and the CPU features given (testable on any machine).</summary>
    public static DTypeChoice Resolve(FinetuneDType requested, bool cuda, CpuBf16Features cpu) => requested switch
    {
        FinetuneDType.Float32 => new(ScalarType.Float32, requested, "requested (DType = Float32)"),
        FinetuneDType.BFloat16 => new(ScalarType.BFloat16, requested, "requested (DType = BFloat16)"),
        _ when cuda => new(ScalarType.BFloat16, FinetuneDType.BFloat16, "Auto: CUDA device"),
        _ when cpu.AmxBf16 => new(ScalarType.BFloat16, FinetuneDType.BFloat16, $"Auto: CPU has AMX-BF16 ({cpu.Source})"),
        _ when cpu.Avx512Bf16 => new(ScalarType.BFloat16, FinetuneDType.BFloat16, $"Auto: CPU has AVX512_BF16 ({cpu.Source})"),
        _ => new(ScalarType.Float32, FinetuneDType.Float32,
            $"Auto: CPU has neither AVX512_BF16 nor AMX-BF16 ({cpu.Source}); bf16 would run several times slower than float32 here"),
    };
}
