using System.Diagnostics;
using ML.Finetune.Models;
using ML.Finetune.Runtime;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Bench;

/// <summary>
/// One AdamW step over GPT-2-small's trainable tensors (their real shapes, gradients present), timed alone:
/// the library's fused CPU pass, its tensor-op form, and TorchSharp's optim.AdamW; float32 weights, and bf16 weights
/// with float32 masters (fused and tensor-op). Median of 7 after 2 warm-ups, milliseconds, plus allocations seen as
/// the process's page faults per step.
/// </summary>
static class OptimizerProbe
{
    public static void Run(int threads, int layers)
    {
        torch.set_num_threads(threads);
        MallocTuning.ApplyForTraining(); // as training does
        var model = CausalLMFactory.CreateRandom(Workloads.Gpt2Small(layers), 1);
        var shapes = new List<(string Name, long[] Shape)>();
        var seen = new HashSet<IntPtr>();
        foreach (var (n, p) in model.named_parameters()) if (seen.Add(p.Handle)) shapes.Add((n, p.shape));
        model.Dispose();
        long count = shapes.Sum(s => s.Shape.Aggregate(1L, (a, b) => a * b));
        Console.WriteLine($"AdamW step over {shapes.Count} tensors, {count:N0} parameters, {threads} threads");

        List<(string, Tensor)> Make(ScalarType dt)
        {
            using var g = new Generator(3);
            return shapes.Select(s =>
            {
                var p = torch.randn(s.Shape, generator: g).mul_(0.02).to_type(dt).requires_grad_(true);
                p.grad = torch.randn(s.Shape, generator: g).mul_(1e-3).to_type(dt);
                return (s.Name, p);
            }).ToList();
        }
        void Time(string label, Action step)
        {
            for (int i = 0; i < 2; i++) step();
            var ts = new double[7];
            long f0 = ProcStats.MinorFaults();
            for (int i = 0; i < ts.Length; i++) { var sw = Stopwatch.StartNew(); step(); ts[i] = sw.Elapsed.TotalMilliseconds; }
            long f1 = ProcStats.MinorFaults();
            Console.WriteLine($"  {label,-44} {Workloads.Median(ts),8:F1} ms   {(f1 - f0) / (double)ts.Length,10:N0} faults/step");
        }
        foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            string d = dt == ScalarType.Float32 ? "fp32" : "bf16 + fp32 masters";
            foreach (bool fused in new[] { true, false })
            {
                var ps = Make(dt);
                using var opt = new ML.Finetune.Training.AdamW(ps, weightDecay: 0.01) { UseFusedCpuKernels = fused };
                Time($"library AdamW, {(fused ? "fused pass" : "tensor ops")}, {d}", () => opt.Step(1e-4));
                foreach (var (_, p) in ps) p.Dispose();
            }
            if (dt == ScalarType.Float32)
            {
                // A Parameter takes over its tensor's handle: build them first, then attach the gradients.
                var ps = Make(dt).Select(p => { var g = p.Item2.grad!.detach().clone(); var q = new TorchSharp.Modules.Parameter(p.Item2.detach()); q.grad = g; return q; }).ToList();
                var opt = optim.AdamW(ps, lr: 1e-4, weight_decay: 0.01);
                Time("TorchSharp optim.AdamW, fp32", () => opt.step());
            }
        }
    }
}
