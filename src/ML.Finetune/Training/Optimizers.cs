using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

public enum OptimizerKind { AdamW, Sgd }

/// <summary>
/// Our optimizers: updates in place under no_grad; the learning rate is passed per step (schedules), and the step can
/// scale the gradients first (global-norm clipping folded into the update, no extra pass).
/// <para>On CPU every step is one fused parallel pass over all trainable tensors (<see cref="FusedCpuKernels"/>); other
/// devices, dtypes or layouts take the tensor-op form, which is also the reference the fused form is tested against.</para>
/// <para>bfloat16 weights get float32 master copies: the update runs on the master and is rounded (nearest even) into
/// the bf16 weight, so updates smaller than bf16's resolution accumulate instead of vanishing.</para>
/// </summary>
public abstract class FinetuneOptimizer : IDisposable
{
    private readonly Tensor?[] _masters;
    private Tensor?[] _grads = []; // the gradients of the step in progress

    private protected FinetuneOptimizer(IReadOnlyList<(string Name, Tensor Parameter)> parameters, double weightDecay)
    {
        Parameters = parameters;
        WeightDecay = weightDecay;
        Decays = parameters.Select(p => UsesWeightDecay(p.Name, p.Parameter)).ToArray();
        _masters = new Tensor?[parameters.Count];
        SyncMasters();
    }

    public IReadOnlyList<(string Name, Tensor Parameter)> Parameters { get; }
    public double WeightDecay { get; }
    protected bool[] Decays { get; }

    /// <summary>False forces the tensor-op form on CPU too (comparisons and benchmarks). Default true.</summary>
    public bool UseFusedCpuKernels { get; set; } = true;

    /// <summary>Whether the last <see cref="Step"/> ran the fused CPU pass.</summary>
    public bool LastStepFused { get; private set; }

    /// <summary>No weight decay on biases, norm weights and any 1-D parameter.</summary>
    public static bool UsesWeightDecay(string name, Tensor p) =>
        p.dim() >= 2 && !name.EndsWith(".bias") && !name.Contains("norm") && !name.Contains(".ln_");

    /// <summary>True for weights whose update runs on a float32 master copy.</summary>
    public static bool NeedsMaster(Tensor p) => p.dtype is ScalarType.BFloat16 or ScalarType.Float16;

    /// <summary>One update with learning rate <paramref name="lr"/>, gradients multiplied by <paramref name="gradientScale"/> first.</summary>
    public void Step(double lr, double gradientScale = 1.0)
    {
        // Each .grad read wraps the native gradient in a new Tensor: read them once per step.
        _grads = Parameters.Select(p => p.Parameter.grad).ToArray();
        var active = Enumerable.Range(0, Parameters.Count).Where(i => _grads[i] is not null).ToArray();
        if (active.Length == 0) return;
        using var _ = torch.no_grad();
        EnsureSlots(active);
        LastStepFused = UseFusedCpuKernels && active.All(Fusable);
        if (LastStepFused) FusedStep(active, lr, gradientScale);
        else foreach (int i in active) TensorOpStep(i, lr, gradientScale);
    }

    bool Fusable(int i)
    {
        var p = Parameters[i].Parameter; var g = _grads[i]!;
        return FusedCpuKernels.IsAddressable(p) && FusedCpuKernels.IsAddressable(g) && g.dtype == p.dtype && g.numel() == p.numel();
    }

    private protected abstract void EnsureSlots(int[] active);
    private protected abstract void FusedStep(int[] active, double lr, double gradientScale);
    private protected abstract void TensorOpStep(int i, double lr, double gradientScale);

    /// <summary>The float32 values an update works on: the master copy of a bf16 weight, the weight itself otherwise.</summary>
    protected Tensor Values(int i) => _masters[i] ?? Parameters[i].Parameter;

    /// <summary>The gradient as the update sees it: in the values' dtype, times the scale (a new tensor only when needed).</summary>
    protected Tensor Gradient(int i, double scale)
    {
        var g = _grads[i]!;
        if (_masters[i] is not null) g = g.to_type(ScalarType.Float32);
        return scale == 1.0 ? g : g.mul(scale);
    }

    /// <summary>After a tensor-op update of a master: round it into the bf16 weight.</summary>
    protected void WriteBack(int i) { if (_masters[i] is Tensor m) Parameters[i].Parameter.copy_(m); }

    private protected unsafe UpdateSegment Segment(int i, Tensor? slot1, Tensor? slot2)
    {
        var p = Parameters[i].Parameter;
        return new UpdateSegment(FusedCpuKernels.Address(p), FusedCpuKernels.Address(_grads[i]!),
            _masters[i] is Tensor m ? (float*)FusedCpuKernels.Address(m) : null,
            slot1 is null ? null : (float*)FusedCpuKernels.Address(slot1), slot2 is null ? null : (float*)FusedCpuKernels.Address(slot2),
            p.numel(), p.dtype == ScalarType.BFloat16, Decays[i]);
    }

    /// <summary>A zero float32 slot shaped like parameter <paramref name="i"/> (optimizer state is float32 for every weight dtype).</summary>
    protected Tensor NewSlot(int i)
    {
        var p = Parameters[i].Parameter;
        var dtype = p.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        return torch.zeros(p.shape, dtype: dtype, device: p.device).DetachFromDisposeScope();
    }

    /// <summary>Re-reads the master copies from the weights (after the weights were set from outside).</summary>
    public void SyncMasters()
    {
        for (int i = 0; i < Parameters.Count; i++) SyncMaster(i);
    }

    void SyncMaster(int i)
    {
        using var _ = torch.no_grad();
        _masters[i]?.Dispose();
        _masters[i] = NeedsMaster(Parameters[i].Parameter)
            ? Parameters[i].Parameter.detach().to_type(ScalarType.Float32).contiguous().clone().DetachFromDisposeScope()
            : null;
    }

    /// <summary>Drops the gradients (PyTorch's set_to_none): the next backward hands its gradient buffers over instead
    /// of adding them into zeroed ones, which saves a zeroing pass and an add pass over every gradient per step.</summary>
    public void ZeroGrad()
    {
        foreach (var (_, p) in Parameters) if (p.grad is not null) p.grad = null;
    }

    public virtual void Dispose() { foreach (var m in _masters) m?.Dispose(); }

    /// <summary>The optimizer's state for checkpoints (keys are stable: "&lt;slot&gt;.&lt;parameter name&gt;"; CPU copies),
    /// including the float32 masters ("master.&lt;name&gt;"), so a resumed bf16 run continues bit for bit.</summary>
    public IReadOnlyDictionary<string, Tensor> GetState()
    {
        var d = new Dictionary<string, Tensor>();
        SaveSlots(d, "master", _masters);
        SaveState(d);
        return d;
    }

    /// <summary>Restores what <see cref="GetState"/> returned; masters missing from the state are re-read from the weights.</summary>
    public void SetState(IReadOnlyDictionary<string, Tensor> state)
    {
        for (int i = 0; i < Parameters.Count; i++)
        {
            if (NeedsMaster(Parameters[i].Parameter) && state.ContainsKey($"master.{Parameters[i].Name}"))
                LoadSlot(state, "master", i, ref _masters[i]);
            else SyncMaster(i);
        }
        LoadState(state);
    }

    protected abstract void SaveState(Dictionary<string, Tensor> state);
    protected abstract void LoadState(IReadOnlyDictionary<string, Tensor> state);

    /// <summary>Copies state slots named "&lt;slot&gt;.&lt;parameter name&gt;" into a per-parameter array (absent → null).</summary>
    protected void LoadSlots(IReadOnlyDictionary<string, Tensor> state, string slot, Tensor?[] target)
    {
        for (int i = 0; i < Parameters.Count; i++) LoadSlot(state, slot, i, ref target[i]);
    }

    void LoadSlot(IReadOnlyDictionary<string, Tensor> state, string slot, int i, ref Tensor? target)
    {
        target?.Dispose();
        target = null;
        if (!state.TryGetValue($"{slot}.{Parameters[i].Name}", out var t)) return;
        var p = Parameters[i].Parameter;
        if (!t.shape.SequenceEqual(p.shape))
            throw new InvalidDataException($"optimizer state '{slot}.{Parameters[i].Name}' has shape [{string.Join(",", t.shape)}], parameter has [{string.Join(",", p.shape)}]");
        var dtype = p.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        target = t.to(dtype, p.device).contiguous().clone().DetachFromDisposeScope();
    }

    protected void SaveSlots(Dictionary<string, Tensor> state, string slot, Tensor?[] source)
    {
        for (int i = 0; i < Parameters.Count; i++)
            if (source[i] is Tensor t) state[$"{slot}.{Parameters[i].Name}"] = t.detach().cpu().contiguous();
    }

    public static FinetuneOptimizer Create(OptimizerKind kind, IReadOnlyList<(string, Tensor)> parameters, double weightDecay,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double momentum = 0) => kind switch
    {
        OptimizerKind.AdamW => new AdamW(parameters, weightDecay, beta1, beta2, eps),
        OptimizerKind.Sgd => new Sgd(parameters, weightDecay, momentum),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };
}

/// <summary>
/// AdamW (Loshchilov &amp; Hutter) exactly as torch.optim.AdamW: decoupled weight decay p ← p(1 − lr·wd), then
/// m ← lerp(m, g, 1−β1), v ← β2·v + (1−β2)·g², p ← p − (lr/(1−β1ᵗ))·m / (√v/√(1−β2ᵗ) + ε).
/// </summary>
public sealed class AdamW : FinetuneOptimizer
{
    private readonly double _b1, _b2, _eps;
    private readonly Tensor?[] _m, _v;
    private int _t;

    public AdamW(IReadOnlyList<(string Name, Tensor Parameter)> parameters, double weightDecay = 0.01, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
        : base(parameters, weightDecay)
    {
        _b1 = beta1; _b2 = beta2; _eps = eps;
        _m = new Tensor?[parameters.Count]; _v = new Tensor?[parameters.Count];
    }

    private protected override void EnsureSlots(int[] active)
    {
        _t++;
        foreach (int i in active) { _m[i] ??= NewSlot(i); _v[i] ??= NewSlot(i); }
    }

    private protected override void FusedStep(int[] active, double lr, double gradientScale) =>
        FusedCpuKernels.AdamW(active.Select(i => Segment(i, _m[i], _v[i])).ToArray(), lr, WeightDecay, _b1, _b2, _eps, _t, gradientScale);

    private protected override void TensorOpStep(int i, double lr, double gradientScale)
    {
        using var scope = torch.NewDisposeScope();
        var p = Values(i); var g = Gradient(i, gradientScale); var m = _m[i]!; var v = _v[i]!;
        if (Decays[i] && WeightDecay != 0) p.mul_(1 - lr * WeightDecay);
        m.lerp_(g, 1 - _b1);
        v.mul_(_b2).addcmul_(g, g, value: 1 - _b2);
        double stepSize = lr / (1 - Math.Pow(_b1, _t)), bc2Sqrt = Math.Sqrt(1 - Math.Pow(_b2, _t));
        var denom = v.sqrt().div_(bc2Sqrt).add_(_eps);
        p.addcdiv_(m, denom, value: -stepSize);
        WriteBack(i);
    }

    public override void Dispose() { base.Dispose(); foreach (var t in _m.Concat(_v)) t?.Dispose(); }

    protected override void SaveState(Dictionary<string, Tensor> d)
    {
        d["adamw.t"] = torch.tensor(new long[] { _t });
        SaveSlots(d, "exp_avg", _m); SaveSlots(d, "exp_avg_sq", _v);
    }

    protected override void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        _t = state.TryGetValue("adamw.t", out var t) ? (int)t.ToInt64() : 0;
        LoadSlots(state, "exp_avg", _m); LoadSlots(state, "exp_avg_sq", _v);
    }
}

/// <summary>SGD exactly as torch.optim.SGD (no dampening/nesterov): d ← g + wd·p on decayed parameters; with momentum
/// buf ← μ·buf + d (buf ← d at first) and d ← buf; p ← p − lr·d.</summary>
public sealed class Sgd : FinetuneOptimizer
{
    private readonly double _momentum;
    private readonly Tensor?[] _buf;
    private readonly bool[] _started;

    public Sgd(IReadOnlyList<(string Name, Tensor Parameter)> parameters, double weightDecay = 0, double momentum = 0) : base(parameters, weightDecay)
    {
        _momentum = momentum;
        _buf = new Tensor?[parameters.Count];
        _started = new bool[parameters.Count];
    }

    private protected override void EnsureSlots(int[] active)
    {
        if (_momentum > 0) foreach (int i in active) _buf[i] ??= NewSlot(i);
    }

    private protected override void FusedStep(int[] active, double lr, double gradientScale)
    {
        // Parameters start their momentum at different steps only when some had no gradient; group by that.
        var groups = new[] { true, false }.Select(first => (first, active.Where(i => _momentum > 0 ? !_started[i] == first : first).ToArray())).ToList();
        foreach (var (first, group) in groups)
        {
            if (group.Length == 0) continue;
            FusedCpuKernels.Sgd(group.Select(i => Segment(i, _momentum > 0 ? _buf[i] : null, null)).ToArray(), lr, WeightDecay, _momentum, first, gradientScale);
            foreach (int i in group) _started[i] = true;
        }
    }

    private protected override void TensorOpStep(int i, double lr, double gradientScale)
    {
        using var scope = torch.NewDisposeScope();
        var p = Values(i);
        var d = Gradient(i, gradientScale);
        if (Decays[i] && WeightDecay != 0) d = d.add(p, alpha: WeightDecay);
        if (_momentum > 0)
        {
            var buf = _buf[i]!;
            if (_started[i]) buf.mul_(_momentum).add_(d); else buf.copy_(d);
            d = buf;
        }
        _started[i] = true;
        p.add_(d, alpha: -lr);
        WriteBack(i);
    }

    public override void Dispose() { base.Dispose(); foreach (var t in _buf) t?.Dispose(); }

    protected override void SaveState(Dictionary<string, Tensor> d) => SaveSlots(d, "momentum_buffer", _buf);

    protected override void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        LoadSlots(state, "momentum_buffer", _buf);
        for (int i = 0; i < _buf.Length; i++) _started[i] = _buf[i] is not null;
    }
}
