using System.Diagnostics;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

/// <summary>
/// Forward + backward of single GPT-2-small pieces at the benchmark's shape (batch 4, seq 128), fp32 and bf16:
/// attention through torch's scaled_dot_product_attention (causal) vs written out (Attention.Eager), and gelu_new as torch's fused tanh gelu vs the written-out
/// formula. Median of 20 after 5 warm-ups, milliseconds per call (×12 layers is what a step pays).
/// </summary>
static class KernelProbe
{
    public static void Run(int threads)
    {
        torch.set_num_threads(threads);
        using var g = new Generator(5);
        double Time(Func<Tensor> f)
        {
            var ts = new double[20];
            for (int i = -5; i < ts.Length; i++)
            {
                using var scope = NewDisposeScope();
                var sw = Stopwatch.StartNew();
                f();
                if (i >= 0) ts[i] = sw.Elapsed.TotalMilliseconds;
            }
            return Workloads.Median(ts);
        }
        foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            Tensor Leaf(params long[] shape) => torch.randn(shape, generator: g).to_type(dt).requires_grad_(true);
            var x = Leaf(4, 128, 3072);
            string d = dt == ScalarType.Float32 ? "fp32" : "bf16";
            foreach (var (b, t) in new[] { (4L, 128L), (2L, 256L), (1L, 512L), (1L, 1024L) })
            {
                var q = Leaf(b, 12, t, 64); var k = Leaf(b, 12, t, 64); var v = Leaf(b, 12, t, 64);
                var causal = Attention.CausalMask(torch.ones(b, t, dtype: ScalarType.Int64), 0, t, dt);
                Tensor Attn(bool fused)
                {
                    var o = fused
                        ? nn.functional.scaled_dot_product_attention(q, k, v, null, 0.0, true)
                        : Attention.Eager(q, k, v, causal, Math.Sqrt(64), divide: true, softmaxFloat32: false, 0, false);
                    o.sum().backward(); return o;
                }
                Console.WriteLine($"{d}: attention [{b},12,{t},64] fwd+bwd  fused {Time(() => Attn(true)),7:F2} ms   eager {Time(() => Attn(false)),7:F2} ms");
            }
            Tensor Gelu(bool fused)
            {
                var y = fused ? Gpt2Mlp.GeluNew(x) : x.mul(0.5).mul(x.add(x.pow(3.0).mul(0.044715)).mul(Math.Sqrt(2.0 / Math.PI)).tanh().add(1.0));
                y.sum().backward(); return y;
            }
            Console.WriteLine($"{d}: gelu_new fwd+bwd   fused {Time(() => Gelu(true)),7:F2} ms   formula {Time(() => Gelu(false)),7:F2} ms");
        }
    }
}
