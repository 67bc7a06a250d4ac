using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

/// <summary>
/// fp32 GEMM GFLOP/s at the shapes of a GPT-2-small training step (B·T = 512 rows), forward (x·Wᵀ) and the two
/// backward products (dY·W, dYᵀ·x), in this process (libtorch's BLAS); bench/peer_gemm.py prints the same table for
/// the PyTorch peer. Run both under the same --isa to compare BLAS libraries shape by shape.
/// </summary>
static class GemmShapesProbe
{
    public static readonly (string Name, long Out, long In)[] Linears =
        [("c_attn", 2304, 768), ("attn proj", 768, 768), ("c_fc", 3072, 768), ("mlp proj", 768, 3072), ("lm head", 50257, 768)];

    public static void Run(int threads, long rows = 512)
    {
        torch.set_num_threads(threads);
        torch.manual_seed(0);
        Console.WriteLine($"ours: libtorch {typeof(torch).Assembly.GetName().Version} (TorchSharp), {threads} threads, rows {rows}, " +
                          $"ATEN_CPU_CAPABILITY={Environment.GetEnvironmentVariable("ATEN_CPU_CAPABILITY") ?? "-"}, MKL_ENABLE_INSTRUCTIONS={Environment.GetEnvironmentVariable("MKL_ENABLE_INSTRUCTIONS") ?? "-"}");
        foreach (var (name, o, i) in Linears)
        {
            using var x = torch.randn(rows, i); using var w = torch.randn(o, i); using var dy = torch.randn(rows, o);
            double f = Time(() => nn.functional.linear(x, w));
            double dx = Time(() => dy.matmul(w));
            double dw = Time(() => dy.t().matmul(x));
            double flops = 2.0 * rows * o * i / 1e9;
            Console.WriteLine($"{name,-10} [{rows},{i}]x[{o},{i}]^T | fwd {flops / f,6:F1}  dX {flops / dx,6:F1}  dW {flops / dw,6:F1} GFLOP/s");
        }
    }

    static double Time(Func<Tensor> op)
    {
        for (int k = 0; k < 2; k++) op().Dispose();
        var ts = new double[7];
        for (int k = 0; k < ts.Length; k++) { var sw = Stopwatch.StartNew(); op().Dispose(); ts[k] = sw.Elapsed.TotalSeconds; }
        return ts.OrderBy(t => t).ElementAt(3);
    }
}
