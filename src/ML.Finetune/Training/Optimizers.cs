using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

public enum OptimizerKind { AdamW, Sgd }

/// <summary>Our optimizers: updates in place under no_grad; the learning rate is passed per step (schedules).</summary>
public abstract class FinetuneOptimizer : IDisposable
{
    protected FinetuneOptimizer(IReadOnlyList<(string Name, Tensor Parameter)> parameters, double weightDecay)
    {
        Parameters = parameters;
        WeightDecay = weightDecay;
        Decays = parameters.Select(p => UsesWeightDecay(p.Name, p.Parameter)).ToArray();
    }

    public IReadOnlyList<(string Name, Tensor Parameter)> Parameters { get; }
    public double WeightDecay { get; }
    protected bool[] Decays { get; }

    /// <summary>No weight decay on biases, norm weights and any 1-D parameter.</summary>
    public static bool UsesWeightDecay(string name, Tensor p) =>
        p.dim() >= 2 && !name.EndsWith(".bias") && !name.Contains("norm") && !name.Contains(".ln_");

    public abstract void Step(double lr);

    public void ZeroGrad()
    {
        foreach (var (_, p) in Parameters) { var g = p.grad; if (g is not null) { g.zero_(); } }
    }

    public virtual void Dispose() { }

    /// <summary>The optimizer's state for checkpoints (keys are stable: "&lt;slot&gt;.&lt;parameter name&gt;"; CPU copies).</summary>
    public virtual IReadOnlyDictionary<string, Tensor> GetState() => new Dictionary<string, Tensor>();

    /// <summary>Restores what <see cref="GetState"/> returned (exactly: a resumed run continues bit for bit).</summary>
    public virtual void SetState(IReadOnlyDictionary<string, Tensor> state) { }

    /// <summary>Copies state slots named "&lt;slot&gt;.&lt;parameter name&gt;" into a per-parameter array.</summary>
    protected void LoadSlots(IReadOnlyDictionary<string, Tensor> state, string slot, Tensor?[] target)
    {
        for (int i = 0; i < Parameters.Count; i++)
        {
            target[i]?.Dispose();
            target[i] = null;
            if (!state.TryGetValue($"{slot}.{Parameters[i].Name}", out var t)) continue;
            var p = Parameters[i].Parameter;
            if (!t.shape.SequenceEqual(p.shape))
                throw new InvalidDataException($"optimizer state '{slot}.{Parameters[i].Name}' has shape [{string.Join(",", t.shape)}], parameter has [{string.Join(",", p.shape)}]");
            target[i] = t.to(p.dtype, p.device).clone().DetachFromDisposeScope();
        }
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

/// <summary>AdamW (Loshchilov &amp; Hutter): decoupled weight decay p ← p(1 − lr·wd), then the bias-corrected Adam step.</summary>
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

    public override void Step(double lr)
    {
        _t++;
        double bc1 = 1 - Math.Pow(_b1, _t), bc2 = 1 - Math.Pow(_b2, _t);
        using var _ = torch.no_grad();
        for (int i = 0; i < Parameters.Count; i++)
        {
            var p = Parameters[i].Parameter;
            var g = p.grad;
            if (g is null) continue;
            if (_m[i] is null)
            {
                _m[i] = torch.zeros_like(p); _m[i]!.DetachFromDisposeScope();
                _v[i] = torch.zeros_like(p); _v[i]!.DetachFromDisposeScope();
            }
            var m = _m[i]!; var v = _v[i]!;
            m.mul_(_b1).add_(g, alpha: 1 - _b1);
            v.mul_(_b2).addcmul_(g, g, value: 1 - _b2);
            if (Decays[i] && WeightDecay > 0) p.mul_(1 - lr * WeightDecay);
            using var denom = v.div(bc2).sqrt_().add_(_eps);
            p.addcdiv_(m, denom, value: -lr / bc1);
        }
    }

    public override void Dispose() { foreach (var t in _m.Concat(_v)) t?.Dispose(); }

    public override IReadOnlyDictionary<string, Tensor> GetState()
    {
        var d = new Dictionary<string, Tensor> { ["adamw.t"] = torch.tensor(new long[] { _t }) };
        SaveSlots(d, "exp_avg", _m); SaveSlots(d, "exp_avg_sq", _v);
        return d;
    }

    public override void SetState(IReadOnlyDictionary<string, Tensor> state)
    {
        _t = state.TryGetValue("adamw.t", out var t) ? (int)t.ToInt64() : 0;
        LoadSlots(state, "exp_avg", _m); LoadSlots(state, "exp_avg_sq", _v);
    }
}

/// <summary>SGD with optional momentum (buf ← μ·buf + g) and coupled L2 weight decay (g + wd·p) on decayed parameters.</summary>
public sealed class Sgd : FinetuneOptimizer
{
    private readonly double _momentum;
    private readonly Tensor?[] _buf;

    public Sgd(IReadOnlyList<(string Name, Tensor Parameter)> parameters, double weightDecay = 0, double momentum = 0) : base(parameters, weightDecay)
    {
        _momentum = momentum;
        _buf = new Tensor?[parameters.Count];
    }

    public override void Step(double lr)
    {
        using var _ = torch.no_grad();
        for (int i = 0; i < Parameters.Count; i++)
        {
            var p = Parameters[i].Parameter;
            var g = p.grad;
            if (g is null) continue;
            using var scope = torch.NewDisposeScope();
            var d = Decays[i] && WeightDecay > 0 ? g.add(p, alpha: WeightDecay) : g;
            if (_momentum > 0)
            {
                if (_buf[i] is null) { _buf[i] = d.detach().clone(); _buf[i]!.DetachFromDisposeScope(); }
                else _buf[i]!.mul_(_momentum).add_(d);
                d = _buf[i]!;
            }
            p.add_(d, alpha: -lr);
        }
    }

    public override void Dispose() { foreach (var t in _buf) t?.Dispose(); }

    public override IReadOnlyDictionary<string, Tensor> GetState()
    {
        var d = new Dictionary<string, Tensor>();
        SaveSlots(d, "momentum_buffer", _buf);
        return d;
    }

    public override void SetState(IReadOnlyDictionary<string, Tensor> state) => LoadSlots(state, "momentum_buffer", _buf);
}
