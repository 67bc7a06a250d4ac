using System.Runtime.InteropServices;
using TorchSharp;

namespace ML.Finetune.Runtime;

/// <summary>
/// CPU math switches of the libtorch inside TorchSharp that TorchSharp 0.107 does not expose.
/// <para><c>torch.set_float32_matmul_precision</c> exists in TorchSharp 0.107 but is marked [Obsolete("not
/// implemented")]. libtorch 2.10 itself has the newer per-backend switch (PyTorch's
/// <c>torch.backends.mkldnn.matmul.fp32_precision = "bf16"</c>): float32 matmuls then run through oneDNN with bf16
/// inputs and float32 accumulation ("bf32") on CPUs with AVX-512-BF16/AMX, instead of MKL's float32 GEMM (slow on AMD).
/// We call <c>at::Context::setFloat32Precision(Float32Backend, Float32Op, Float32Precision)</c> directly (plain enums,
/// so the C++ ABI is just (this, int, int, int)). Precision drops to bf16's 8-bit mantissa on the matmul inputs, so
/// it is opt-in; bench/README.md has the measured effect.</para>
/// </summary>
public static class TorchCpuMath
{
    // ATen/Context.h (libtorch 2.10): enum class Float32Backend { GENERIC, CUDA, MKLDNN };
    // enum class Float32Op { ALL, CONV, RNN, MATMUL }; enum class Float32Precision { NONE, IEEE, TF32, BF16 };
    const int BackendMkldnn = 2, OpMatmul = 3, PrecisionIeee = 1, PrecisionBf16 = 3;

    [DllImport("libtorch_cpu.so", EntryPoint = "_ZN2at13globalContextEv")]
    static extern IntPtr GlobalContext();

    [DllImport("libtorch_cpu.so", EntryPoint = "_ZN2at7Context19setFloat32PrecisionENS_14Float32BackendENS_9Float32OpENS_16Float32PrecisionE")]
    static extern void SetFloat32Precision(IntPtr context, int backend, int op, int precision);

    /// <summary>
    /// true: float32 matmuls may use bf16 inputs with float32 accumulation through oneDNN (where the CPU supports
    /// bf16); false: IEEE float32 (the default). Returns false when the switch is unavailable (not Linux x64 libtorch
    /// 2.10 CPU, symbol missing).
    /// </summary>
    public static bool TrySetFloat32MatmulBf16(bool enable)
    {
        try
        {
            _ = torch.ones(1); // make sure TorchSharp loaded libtorch
            SetFloat32Precision(GlobalContext(), BackendMkldnn, OpMatmul, enable ? PrecisionBf16 : PrecisionIeee);
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return false; }
    }
}
