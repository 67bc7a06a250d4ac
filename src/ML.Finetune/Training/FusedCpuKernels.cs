using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

/// <summary>
/// One parameter's memory for a fused CPU update: the working weight (float32 or bfloat16), its gradient (same dtype),
/// an optional float32 master copy (bf16 weights: the update happens on the master and is rounded into the weight),
/// and up to two float32 optimizer slots.
/// </summary>
internal unsafe readonly struct UpdateSegment
{
    public UpdateSegment(void* weight, void* grad, float* master, float* slot1, float* slot2, long length, bool bf16, bool decay)
    {
        Weight = weight; Grad = grad; Master = master; Slot1 = slot1; Slot2 = slot2; Length = length; Bf16 = bf16; Decay = decay;
    }

    public readonly void* Weight, Grad;
    public readonly float* Master, Slot1, Slot2;
    public readonly long Length;
    public readonly bool Bf16, Decay;
}

/// <summary>
/// The optimizers' element-wise updates and the gradient norm as single passes over raw CPU memory: all trainable
/// tensors in one parallel loop, no temporaries, no per-tensor kernel launches (TorchSharp has no foreach/fused ops;
/// the tensor-op form costs ~9 passes and a temporary per tensor). Work is split into fixed chunks, so results do not
/// depend on the thread count; reductions add per-chunk partial sums in chunk order (deterministic).
/// </summary>
internal static unsafe class FusedCpuKernels
{
    /// <summary>Elements per work item: a bf16 chunk's float32 scratch (64 KiB) stays in L2.</summary>
    public const int ChunkElements = 1 << 14;

    /// <summary>True when the tensor's memory can be addressed directly (CPU, contiguous, float32 or bfloat16).</summary>
    public static bool IsAddressable(Tensor t) =>
        t.device_type == DeviceType.CPU && t.is_contiguous() && t.dtype is ScalarType.Float32 or ScalarType.BFloat16;

    /// <summary>The address of element 0 (the tensor must be <see cref="IsAddressable"/>, or a float32 CPU contiguous slot).</summary>
    public static void* Address(Tensor t)
    {
        if (t.numel() == 0) return null;
        // A one-element view: its byte span starts at element 0 whatever the tensor's size (Span lengths are int).
        using var first = t.view(-1).narrow(0, 0, 1);
        return Unsafe.AsPointer(ref MemoryMarshal.GetReference(first.bytes));
    }

    /// <summary>Parallelism of the calling thread's kernels: torch's intra-op thread count unless overridden here
    /// (per thread; tests use it to show results do not depend on it without touching torch's process-wide setting).</summary>
    internal static int? ThreadsOverride { get => t_threads; set => t_threads = value; }
    [ThreadStatic] static int? t_threads;

    static int Threads => Math.Max(1, ThreadsOverride ?? torch.get_num_threads());

    static (int Segment, long Start, int Count)[] Chunks(ReadOnlySpan<long> lengths)
    {
        var list = new List<(int, long, int)>();
        for (int s = 0; s < lengths.Length; s++)
            for (long start = 0; start < lengths[s]; start += ChunkElements)
                list.Add((s, start, (int)Math.Min(ChunkElements, lengths[s] - start)));
        return list.ToArray();
    }

    static void Run(UpdateSegment[] segments, Action<UpdateSegment, long, int, float[]> body)
    {
        var chunks = Chunks(segments.Select(s => s.Length).ToArray());
        Parallel.For(0, chunks.Length, new ParallelOptions { MaxDegreeOfParallelism = Threads },
            () => new float[ChunkElements],
            (i, _, scratch) => { var (s, start, n) = chunks[i]; body(segments[s], start, n, scratch); return scratch; },
            _ => { });
    }

    /// <summary>The chunk's gradient as float32, times the scale; bf16 or scaled gradients land in <paramref name="scratch"/>.</summary>
    static float* GradientChunk(in UpdateSegment s, long start, int n, float gradScale, float* scratch)
    {
        if (s.Bf16)
        {
            Bf16.ToFloat((ushort*)s.Grad + start, scratch, n);
            if (gradScale != 1f) Scale(scratch, scratch, n, gradScale);
            return scratch;
        }
        float* g = (float*)s.Grad + start;
        if (gradScale == 1f) return g;
        Scale(g, scratch, n, gradScale);
        return scratch;
    }

    /// <summary>The float32 values to update: the master copy for bf16 weights, the weight itself otherwise.</summary>
    static float* ValuesChunk(in UpdateSegment s, long start) => s.Master != null ? s.Master + start : (float*)s.Weight + start;

    static void WriteBack(in UpdateSegment s, long start, int n)
    {
        if (s.Bf16) Bf16.FromFloat(s.Master + start, (ushort*)s.Weight + start, n);
    }

    /// <summary>
    /// AdamW as torch.optim.AdamW computes it (decoupled decay, then m ← lerp(m, g, 1−β1), v ← β2·v + (1−β2)·g²,
    /// p ← p − (lr/bc1)·m / (√v/√bc2 + ε)); Slot1 = m, Slot2 = v; g is multiplied by <paramref name="gradScale"/> first.
    /// </summary>
    public static void AdamW(UpdateSegment[] segments, double lr, double weightDecay, double beta1, double beta2, double eps, int step, double gradScale)
    {
        float w1 = (float)(1 - beta1), b2 = (float)beta2, c2 = (float)(1 - beta2), e = (float)eps, gs = (float)gradScale;
        float decayFactor = (float)(1 - lr * weightDecay);
        float stepSize = (float)(lr / (1 - Math.Pow(beta1, step)));
        float bc2Sqrt = (float)Math.Sqrt(1 - Math.Pow(beta2, step));
        Run(segments, (s, start, n, scratch) =>
        {
            fixed (float* sp = scratch)
            {
                float* g = GradientChunk(s, start, n, gs, sp);
                float* p = ValuesChunk(s, start), m = s.Slot1 + start, v = s.Slot2 + start;
                AdamWChunk(p, g, m, v, n, w1, b2, c2, e, s.Decay && weightDecay != 0 ? decayFactor : 1f, stepSize, bc2Sqrt);
                WriteBack(s, start, n);
            }
        });
    }

    static void AdamWChunk(float* p, float* g, float* m, float* v, int n, float w1, float b2, float c2, float eps, float decay, float stepSize, float bc2Sqrt)
    {
        int i = 0, w = Vector<float>.Count;
        var vw1 = new Vector<float>(w1); var vb2 = new Vector<float>(b2); var vc2 = new Vector<float>(c2);
        var veps = new Vector<float>(eps); var vdecay = new Vector<float>(decay); var vstep = new Vector<float>(-stepSize);
        var vbc2 = new Vector<float>(bc2Sqrt);
        for (; i <= n - w; i += w)
        {
            var gi = Vector.Load(g + i);
            var mi = Vector.Load(m + i); mi += vw1 * (gi - mi);
            var vi = Vector.Load(v + i) * vb2 + vc2 * gi * gi;
            var pi = Vector.Load(p + i) * vdecay;
            var denom = Vector.SquareRoot(vi) / vbc2 + veps;
            pi += vstep * (mi / denom);
            mi.Store(m + i); vi.Store(v + i); pi.Store(p + i);
        }
        for (; i < n; i++)
        {
            float gi = g[i];
            float mi = m[i] + w1 * (gi - m[i]);
            float vi = v[i] * b2 + c2 * gi * gi;
            float denom = MathF.Sqrt(vi) / bc2Sqrt + eps;
            p[i] = p[i] * decay + -stepSize * (mi / denom);
            m[i] = mi; v[i] = vi;
        }
    }

    /// <summary>
    /// SGD as torch.optim.SGD computes it: d ← g + wd·p (decayed tensors), with momentum buf ← μ·buf + d (buf ← d on
    /// the first step) and d ← buf; p ← p − lr·d. Slot1 = the momentum buffer (null without momentum).
    /// </summary>
    public static void Sgd(UpdateSegment[] segments, double lr, double weightDecay, double momentum, bool firstMomentumStep, double gradScale)
    {
        float nlr = (float)-lr, wd = (float)weightDecay, mu = (float)momentum, gs = (float)gradScale;
        Run(segments, (s, start, n, scratch) =>
        {
            fixed (float* sp = scratch)
            {
                float* g = GradientChunk(s, start, n, gs, sp);
                float* p = ValuesChunk(s, start);
                float* buf = s.Slot1 == null ? null : s.Slot1 + start;
                float decay = s.Decay ? wd : 0f;
                for (int i = 0; i < n; i++)
                {
                    float d = decay != 0f ? g[i] + decay * p[i] : g[i];
                    if (buf != null) { d = firstMomentumStep ? d : buf[i] * mu + d; buf[i] = d; }
                    p[i] = p[i] + nlr * d;
                }
                WriteBack(s, start, n);
            }
        });
    }

    static void Scale(float* src, float* dst, int n, float f)
    {
        int i = 0, w = Vector<float>.Count;
        var vf = new Vector<float>(f);
        for (; i <= n - w; i += w) (Vector.Load(src + i) * vf).Store(dst + i);
        for (; i < n; i++) dst[i] = src[i] * f;
    }

    /// <summary>Σ x² over tensors (float32/bfloat16, addressable), accumulated in float64; chunk partial sums added in order.</summary>
    public static double SumOfSquares(IReadOnlyList<Tensor> tensors) => SumOfSquaredDifferences(tensors, null);

    /// <summary>Σ (a − b)² over tensor pairs of equal dtype and shape (b null: Σ a²), in float64, deterministic.</summary>
    public static double SumOfSquaredDifferences(IReadOnlyList<Tensor> a, IReadOnlyList<Tensor>? b)
    {
        var pairs = Enumerable.Range(0, a.Count)
            .Select(k => ((nint)Address(a[k]), b is null ? 0 : (nint)Address(b[k]), a[k].dtype == ScalarType.BFloat16)).ToArray();
        var chunks = Chunks(a.Select(t => t.numel()).ToArray());
        var partial = new double[chunks.Length];
        Parallel.For(0, chunks.Length, new ParallelOptions { MaxDegreeOfParallelism = Threads },
            () => (new float[ChunkElements], new float[ChunkElements]),
            (i, _, scratch) =>
            {
                var (k, start, n) = chunks[i];
                var (pa, pb, bf16) = pairs[k];
                fixed (float* x = scratch.Item1) fixed (float* y = scratch.Item2)
                    partial[i] = SquaredSum(AsFloat(pa, start, n, bf16, x), pb == 0 ? null : AsFloat(pb, start, n, bf16, y), n);
                return scratch;
            },
            _ => { });
        double total = 0;
        foreach (var p in partial) total += p;
        return total;
    }

    /// <summary>Elements [start, start + n) as float32: in place for float32 memory, widened into <paramref name="scratch"/> for bf16.</summary>
    static float* AsFloat(nint data, long start, int n, bool bf16, float* scratch)
    {
        if (!bf16) return (float*)data + start;
        Bf16.ToFloat((ushort*)data + start, scratch, n);
        return scratch;
    }

    static double SquaredSum(float* x, float* y, int n)
    {
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            double d = y == null ? x[i] : (double)x[i] - y[i];
            sum += d * d;
        }
        return sum;
    }
}

/// <summary>bfloat16 ↔ float32 exactly as c10::BFloat16 converts: widening is a 16-bit shift; narrowing rounds to nearest even, NaN → 0x7FC0.</summary>
internal static unsafe class Bf16
{
    public static float ToFloat(ushort b) => BitConverter.UInt32BitsToSingle((uint)b << 16);

    public static ushort FromFloat(float f)
    {
        if (float.IsNaN(f)) return 0x7FC0;
        uint bits = BitConverter.SingleToUInt32Bits(f);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    public static void ToFloat(ushort* src, float* dst, int n)
    {
        int i = 0, w = Vector<ushort>.Count;
        for (; i <= n - w; i += w)
        {
            Vector.Widen(Vector.Load(src + i), out Vector<uint> lo, out Vector<uint> hi);
            Vector.ShiftLeft(lo, 16).As<uint, float>().Store(dst + i);
            Vector.ShiftLeft(hi, 16).As<uint, float>().Store(dst + i + w / 2);
        }
        for (; i < n; i++) dst[i] = ToFloat(src[i]);
    }

    public static void FromFloat(float* src, ushort* dst, int n)
    {
        int i = 0, w = Vector<ushort>.Count, h = Vector<uint>.Count;
        for (; i <= n - w; i += w) Vector.Narrow(Round(src + i), Round(src + i + h)).Store(dst + i);
        for (; i < n; i++) dst[i] = FromFloat(src[i]);
    }

    static Vector<uint> Round(float* p)
    {
        var f = Vector.Load(p);
        var bits = f.As<float, uint>();
        var rounded = Vector.ShiftRightLogical(bits + new Vector<uint>(0x7FFFu) + (Vector.ShiftRightLogical(bits, 16) & Vector<uint>.One), 16);
        var notNan = Vector.Equals(f, f).As<int, uint>();
        return Vector.ConditionalSelect(notNan, rounded, new Vector<uint>(0x7FC0u));
    }
}
