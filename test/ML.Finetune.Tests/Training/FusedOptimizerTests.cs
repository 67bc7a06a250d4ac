using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Training;

/// <summary>
/// The fused CPU optimizer pass (Training/FusedCpuKernels) against torch.optim (TorchSharp's port of PyTorch's
/// algorithms) and against our own tensor-op form; bf16 weights with float32 masters; the fused gradient norm.
/// Shapes are chosen so tensors span several work chunks and end in a partial vector.
/// </summary>
public class FusedOptimizerTests
{
    const long Big = FusedCpuKernels.ChunkElements * 2 + 77;

    static List<(string Name, Tensor Parameter)> Params(ScalarType dtype, long seed)
    {
        using var g = new Generator((ulong)seed);
        return new List<(string, Tensor)>
        {
            ("layer.weight", torch.randn([Big / 61 + 1, 61], generator: g).to_type(dtype).requires_grad_(true)),
            ("layer.bias", torch.randn([333], generator: g).to_type(dtype).requires_grad_(true)),
            ("head.weight", torch.randn([7, 5], generator: g).to_type(dtype).requires_grad_(true)),
        };
    }

    /// <summary>Gives every parameter the step's gradient (same values for every copy: seeded by step).</summary>
    static void SetGrads(IEnumerable<Tensor> ps, int step)
    {
        using var g = new Generator((ulong)(100 + step));
        foreach (var p in ps)
        {
            var grad = torch.randn(p.shape, generator: g).mul_(0.3).to_type(p.dtype);
            if (p.grad is null) p.grad = grad; else using (torch.no_grad()) p.grad.copy_(grad);
        }
    }

    static double MaxDiff(Tensor a, Tensor b) => a.to_type(ScalarType.Float64).sub(b.to_type(ScalarType.Float64)).abs().max().ToDouble();

    [Fact]
    public void FusedAdamW_MatchesTorchOptimAdamW_AndTheTensorOpForm()
    {
        using var scope = NewDisposeScope();
        // torch.optim.AdamW decays every tensor: compare on the decayed (2-D) weights, with wd on.
        var fused = Params(ScalarType.Float32, 1).Where(p => p.Parameter.dim() == 2).ToList();
        var ops = Params(ScalarType.Float32, 1).Where(p => p.Parameter.dim() == 2).ToList();
        var refs = Params(ScalarType.Float32, 1).Where(p => p.Parameter.dim() == 2).Select(p => new TorchSharp.Modules.Parameter(p.Parameter.detach().clone())).ToList();
        using var a = new AdamW(fused, weightDecay: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8);
        using var b = new AdamW(ops, weightDecay: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8) { UseFusedCpuKernels = false };
        var r = optim.AdamW(refs, lr: 0.01, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1);
        for (int step = 0; step < 6; step++)
        {
            SetGrads(fused.Select(p => p.Parameter), step); SetGrads(ops.Select(p => p.Parameter), step); SetGrads(refs, step);
            a.Step(0.01); b.Step(0.01); r.step();
            Assert.True(a.LastStepFused);
            Assert.False(b.LastStepFused);
        }
        var initial = Params(ScalarType.Float32, 1).Where(p => p.Parameter.dim() == 2).ToList();
        for (int i = 0; i < fused.Count; i++)
        {
            Assert.True(MaxDiff(fused[i].Parameter, refs[i]) < 2e-6, $"fused vs torch.optim {fused[i].Name}: {MaxDiff(fused[i].Parameter, refs[i])}");
            Assert.True(MaxDiff(ops[i].Parameter, refs[i]) < 2e-6, $"tensor ops vs torch.optim {ops[i].Name}");
            Assert.True(MaxDiff(fused[i].Parameter, initial[i].Parameter) > 0.01, "parameters moved");
        }
    }

    [Fact]
    public void FusedAdamW_SkipsDecayOnBiases_AndFoldsTheGradientScale()
    {
        using var scope = NewDisposeScope();
        var scaled = Params(ScalarType.Float32, 2);
        var prescaled = Params(ScalarType.Float32, 2);
        using var a = new AdamW(scaled, weightDecay: 0.5);
        using var b = new AdamW(prescaled, weightDecay: 0.5) { UseFusedCpuKernels = false };
        for (int step = 0; step < 3; step++)
        {
            SetGrads(scaled.Select(p => p.Parameter), step); SetGrads(prescaled.Select(p => p.Parameter), step);
            using (torch.no_grad()) foreach (var (_, p) in prescaled) p.grad!.mul_(0.25);
            a.Step(0.02, gradientScale: 0.25); b.Step(0.02);
        }
        for (int i = 0; i < scaled.Count; i++)
            Assert.True(MaxDiff(scaled[i].Parameter, prescaled[i].Parameter) < 2e-6, scaled[i].Name);
        // The bias (1-D) must not see weight decay: with zero gradients only decayed tensors move.
        var z = Params(ScalarType.Float32, 3);
        var before = z.Select(p => p.Parameter.detach().clone()).ToList();
        foreach (var (_, p) in z) p.grad = torch.zeros_like(p);
        using var c = new AdamW(z, weightDecay: 0.5);
        c.Step(0.1);
        Assert.Equal(0.0, MaxDiff(z[1].Parameter, before[1]));
        Assert.True(MaxDiff(z[0].Parameter.div(before[0]), torch.full_like(before[0], 0.95)) < 1e-6, "decayed by 1 − lr·wd");
    }

    [Fact]
    public void FusedSgdWithMomentum_MatchesTorchOptimSgd()
    {
        using var scope = NewDisposeScope();
        var fused = Params(ScalarType.Float32, 4).Where(p => p.Parameter.dim() == 2).ToList();
        var ops = fused.Select(p => (p.Name, (Tensor)p.Parameter.detach().clone().requires_grad_(true))).ToList();
        var refs = fused.Select(p => new TorchSharp.Modules.Parameter(p.Parameter.detach().clone())).ToList();
        using var a = new Sgd(fused, weightDecay: 0.01, momentum: 0.9);
        using var b = new Sgd(ops, weightDecay: 0.01, momentum: 0.9) { UseFusedCpuKernels = false };
        var r = optim.SGD(refs, 0.05, momentum: 0.9, weight_decay: 0.01);
        for (int step = 0; step < 5; step++)
        {
            SetGrads(fused.Select(p => p.Parameter), step); SetGrads(refs, step); SetGrads(ops.Select(p => p.Item2), step);
            a.Step(0.05); r.step(); b.Step(0.05);
            Assert.True(a.LastStepFused);
        }
        for (int i = 0; i < fused.Count; i++)
        {
            Assert.True(MaxDiff(ops[i].Item2, refs[i]) < 2e-6, $"tensor ops vs torch.optim {fused[i].Name}: {MaxDiff(ops[i].Item2, refs[i])}");
            Assert.True(MaxDiff(fused[i].Parameter, refs[i]) < 2e-6, $"fused vs torch.optim {fused[i].Name}: {MaxDiff(fused[i].Parameter, refs[i])}");
        }
    }

    [Fact]
    public void Bf16Weights_UpdateTheirFloat32Masters_AndAreTheRoundedMaster()
    {
        using var scope = NewDisposeScope();
        var bf = Params(ScalarType.BFloat16, 5);
        // The float32 twin starts at the same (bf16-representable) values and sees the same (bf16-representable) gradients.
        var f32 = bf.Select(p => (p.Name, (Tensor)p.Parameter.detach().to_type(ScalarType.Float32).requires_grad_(true))).ToList();
        var ops = bf.Select(p => (p.Name, (Tensor)p.Parameter.detach().clone().requires_grad_(true))).ToList();
        using var a = new AdamW(bf, weightDecay: 0.1);
        using var b = new AdamW(f32, weightDecay: 0.1);
        using var c = new AdamW(ops, weightDecay: 0.1) { UseFusedCpuKernels = false };
        var start = bf.Select(p => p.Parameter.detach().clone()).ToList();
        const double lr = 1e-4; // far below bf16's resolution near 1 (2^-8): a bf16-only update would mostly round away
        for (int step = 0; step < 5; step++)
        {
            SetGrads(bf.Select(p => p.Parameter), step); SetGrads(ops.Select(p => p.Item2), step);
            SetGrads(f32.Select(p => p.Item2), step);
            using (torch.no_grad()) foreach (var (i, p) in f32.Select((p, i) => (i, p.Item2))) p.grad!.copy_(bf[i].Parameter.grad!);
            a.Step(lr); b.Step(lr); c.Step(lr);
            Assert.True(a.LastStepFused);
        }
        var state = a.GetState();
        var opsState = c.GetState();
        for (int i = 0; i < bf.Count; i++)
        {
            var master = state[$"master.{bf[i].Name}"];
            Assert.Equal(ScalarType.Float32, master.dtype);
            Assert.True(MaxDiff(master, f32[i].Item2) < 1e-6, $"master vs float32 AdamW {bf[i].Name}: {MaxDiff(master, f32[i].Item2)}");
            Assert.Equal(0.0, MaxDiff(bf[i].Parameter, master.to_type(ScalarType.BFloat16)));      // weight = round(master)
            // The tensor-op form (torch kernels) keeps the same master within float32 rounding, and its own weight = round(master).
            Assert.True(MaxDiff(master, opsState[$"master.{bf[i].Name}"]) < 1e-6, "fused vs tensor-op master");
            Assert.Equal(0.0, MaxDiff(ops[i].Item2, opsState[$"master.{bf[i].Name}"].to_type(ScalarType.BFloat16)));
            Assert.True(MaxDiff(master, start[i]) > 4e-4, "the masters moved by about 5·lr");
        }
        // Resume: a fresh optimizer given this state continues exactly like the original.
        var bf2 = bf.Select(p => (p.Name, (Tensor)p.Parameter.detach().clone().requires_grad_(true))).ToList();
        using var a2 = new AdamW(bf2, weightDecay: 0.1);
        a2.SetState(state);
        SetGrads(bf.Select(p => p.Parameter), 9); SetGrads(bf2.Select(p => p.Item2), 9);
        a.Step(lr); a2.Step(lr);
        var s1 = a.GetState(); var s2 = a2.GetState();
        foreach (var k in s1.Keys) Assert.Equal(0.0, MaxDiff(s1[k], s2[k]));
    }

    [Fact]
    public void Bf16Rounding_MatchesTorchBitForBit()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(11);
        var values = torch.cat([
            torch.randn([5003], generator: g).mul_(1e3),
            torch.tensor(new[] { 0f, -0f, 1f, 1.00390625f, 1.01171875f, 3.4e38f, -3.4e38f, float.PositiveInfinity, float.NegativeInfinity, 1e-40f, -1e-42f, float.Epsilon }),
            // Exact halfway cases (tie → even) and one ulp either side.
            torch.tensor(Enumerable.Range(0, 64).Select(i => BitConverter.UInt32BitsToSingle(0x3F800000u + ((uint)i << 15) + (uint)(i % 3 - 1))).ToArray()),
        ]).contiguous();
        var torchBf = values.to_type(ScalarType.BFloat16);
        var ours = torch.empty_like(torchBf);
        unsafe { Bf16.FromFloat((float*)FusedCpuKernels.Address(values), (ushort*)FusedCpuKernels.Address(ours), (int)values.numel()); }
        Assert.True(ours.bytes.SequenceEqual(torchBf.bytes), "float32 → bf16 bits differ from torch");
        var back = torch.empty_like(values);
        unsafe { Bf16.ToFloat((ushort*)FusedCpuKernels.Address(torchBf), (float*)FusedCpuKernels.Address(back), (int)values.numel()); }
        Assert.True(back.bytes.SequenceEqual(torchBf.to_type(ScalarType.Float32).bytes), "bf16 → float32 differs from torch");
        Assert.Equal(0x7FC0, Bf16.FromFloat(float.NaN));
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void GradientNorm_IsTheFloat64Norm_AndIndependentOfThreads(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var ps = Params(dtype, 6);
        SetGrads(ps.Select(p => p.Parameter), 0);
        double expected = Math.Sqrt(ps.Select(p => p.Parameter.grad!.to_type(ScalarType.Float64).square().sum().ToDouble()).Sum());
        try
        {
            FusedCpuKernels.ThreadsOverride = 1;
            double one = FinetuneTrainer.GradientNorm(ps);
            FusedCpuKernels.ThreadsOverride = 3;
            double many = FinetuneTrainer.GradientNorm(ps);
            Assert.Equal(one, many);                      // bit-identical
            Assert.Equal(expected, one, expected * 1e-12);
        }
        finally { FusedCpuKernels.ThreadsOverride = null; }
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void ReportedDistance_FusedPassEqualsTheDifferentiableSum(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var model = ML.Finetune.Models.CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"), new ML.Finetune.Models.ModelLoadOptions { DType = dtype });
        using var method = new FullFinetuneMethod();
        method.Attach(model, 0);
        using var g = new Generator(8);
        using (torch.no_grad())
            foreach (var (_, p) in method.TrainableParameters) p.add_(torch.randn(p.shape, generator: g).mul_(0.01).to_type(dtype));
        double withGraph = method.DistanceFromPretrainedSquared().ToDouble();      // tensor ops (float32 sums)
        double fused;
        using (torch.no_grad()) fused = method.DistanceFromPretrainedSquared().ToDouble();
        Assert.True(withGraph > 0);
        Assert.True(Math.Abs(fused - withGraph) <= 1e-5 * withGraph, $"fused {fused} vs tensor ops {withGraph}");
    }
}
