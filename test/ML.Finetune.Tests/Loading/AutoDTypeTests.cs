using ML.Finetune.Estimators;
using ML.Finetune.Runtime;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Loading;

/// <summary>DType = Auto: bf16 on CUDA and on CPUs with AVX512_BF16 or AMX-BF16, float32 elsewhere; explicit choices kept.</summary>
public class AutoDTypeTests
{
    static readonly CpuBf16Features None = new(false, false, "test"), Avx512 = new(true, false, "test"), Amx = new(false, true, "test");

    [Fact]
    public void Auto_PicksBf16OnlyWithBf16Hardware()
    {
        Assert.Equal(ScalarType.Float32, AutoDType.Resolve(FinetuneDType.Auto, cuda: false, None).DType);
        Assert.Equal(ScalarType.BFloat16, AutoDType.Resolve(FinetuneDType.Auto, cuda: false, Avx512).DType);
        Assert.Equal(ScalarType.BFloat16, AutoDType.Resolve(FinetuneDType.Auto, cuda: false, Amx).DType);
        Assert.Equal(ScalarType.BFloat16, AutoDType.Resolve(FinetuneDType.Auto, cuda: true, None).DType);
        var fp32 = AutoDType.Resolve(FinetuneDType.Auto, cuda: false, None);
        Assert.Equal(FinetuneDType.Float32, fp32.Option); // what a fitted model saves
        Assert.Contains("neither AVX512_BF16 nor AMX-BF16", fp32.Reason);
        Assert.Contains("AVX512_BF16", AutoDType.Resolve(FinetuneDType.Auto, false, Avx512).Reason);
        Assert.Contains("CUDA", AutoDType.Resolve(FinetuneDType.Auto, true, Avx512).Reason);
    }

    [Fact]
    public void ExplicitChoices_AreKeptWhateverTheHardware()
    {
        foreach (var cpu in new[] { None, Avx512, Amx })
            foreach (bool cuda in new[] { false, true })
            {
                Assert.Equal(ScalarType.Float32, AutoDType.Resolve(FinetuneDType.Float32, cuda, cpu).DType);
                Assert.Equal(ScalarType.BFloat16, AutoDType.Resolve(FinetuneDType.BFloat16, cuda, cpu).DType);
            }
    }

    [Fact]
    public void Detection_AgreesWithTheKernelsCpuFlags()
    {
        // /proc/cpuinfo lists what the CPU has and the kernel enabled: an independent reading of the same bits.
        if (!OperatingSystem.IsLinux() || !System.Runtime.Intrinsics.X86.X86Base.IsSupported) return;
        var flags = File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("flags")).Split(':', 2)[1].Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
        var cpu = CpuBf16Features.Detect();
        Assert.Equal(flags.Contains("avx512_bf16") && flags.Contains("avx512f"), cpu.Avx512Bf16);
        Assert.Equal(flags.Contains("amx_bf16") && flags.Contains("avx512f"), cpu.AmxBf16);
    }

    [Fact]
    public void DefaultOption_IsAuto_AndSavedValuesKeepTheirMeaning()
    {
        Assert.Equal(FinetuneDType.Auto, new LoraFinetuneOptions().DType);
        // Fitted models saved before Auto existed store 0 and 1.
        Assert.Equal(0, (int)FinetuneDType.Float32);
        Assert.Equal(1, (int)FinetuneDType.BFloat16);
    }
}
