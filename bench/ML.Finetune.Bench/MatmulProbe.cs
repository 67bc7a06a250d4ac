using System.Diagnostics;
using ML.Finetune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

/// <summary>GEMM GFLOP/s on this CPU: fp32 (MKL), fp32 with the oneDNN bf16 ("bf32") switch, and bf16 (oneDNN).</summary>
static class MatmulProbe
{
    public static void Run(int threads)
    {
        torch.set_num_threads(threads);
        long n = 1536;
        using var a = torch.randn(n, n, dtype: ScalarType.Float64);
        using var b = torch.randn(n, n, dtype: ScalarType.Float64);
        using var exact = a.matmul(b);
        double T(Tensor x, Tensor y, out double relErr)
        {
            for (int i = 0; i < 2; i++) x.matmul(y).Dispose();
            var ts = new double[5];
            for (int i = 0; i < ts.Length; i++) { var sw = Stopwatch.StartNew(); x.matmul(y).Dispose(); ts[i] = sw.Elapsed.TotalSeconds; }
            using var r = x.matmul(y).to_type(ScalarType.Float64);
            relErr = (r - exact).abs().max().ToDouble() / exact.abs().max().ToDouble();
            return 2.0 * n * n * n / ts.OrderBy(t => t).ElementAt(2) / 1e9;
        }
        using var a32 = a.to_type(ScalarType.Float32); using var b32 = b.to_type(ScalarType.Float32);
        using var a16 = a.to_type(ScalarType.BFloat16); using var b16 = b.to_type(ScalarType.BFloat16);
        Console.WriteLine($"fp32 matmul {n}^3 (default, IEEE):  {T(a32, b32, out var e1),7:F0} GFLOP/s  max rel err {e1:E1}");
        bool ok = TorchCpuMath.TrySetFloat32MatmulBf16(true);
        Console.WriteLine($"fp32 matmul {n}^3 (mkldnn bf16={ok}): {T(a32, b32, out var e2),7:F0} GFLOP/s  max rel err {e2:E1}");
        TorchCpuMath.TrySetFloat32MatmulBf16(false);
        Console.WriteLine($"fp32 matmul {n}^3 (back to IEEE):   {T(a32, b32, out var e3),7:F0} GFLOP/s  max rel err {e3:E1}");
        Console.WriteLine($"bf16 matmul {n}^3 (oneDNN):         {T(a16, b16, out var e4),7:F0} GFLOP/s  max rel err {e4:E1}");
        // The LM head as generation runs it: linear(x [rows, 768], W [50257, 768]) (W transposed, like nn.Linear).
        foreach (long rows in new long[] { 1, 16, 512 })
            foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            {
                using var x = torch.randn(rows, 768).to_type(dt);
                using var w = torch.randn(50257, 768).to_type(dt);
                for (int i = 0; i < 2; i++) nn.functional.linear(x, w).Dispose();
                var ts = new double[5];
                for (int i = 0; i < ts.Length; i++) { var sw = Stopwatch.StartNew(); nn.functional.linear(x, w).Dispose(); ts[i] = sw.Elapsed.TotalSeconds; }
                double med = ts.OrderBy(t => t).ElementAt(2);
                Console.WriteLine($"linear [{rows},768]x[50257,768]^T {dt,-9}: {med * 1000,8:F2} ms  {2.0 * rows * 768 * 50257 / med / 1e9,7:F1} GFLOP/s");
            }
    }
}
