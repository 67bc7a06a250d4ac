using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>Attention helpers shared by GPT-2 and the Llama family.</summary>
internal static class Attention
{
    /// <summary>
    /// Additive mask [B, 1, T, S] with 0 where query i (absolute position past+i) may see key j (j ≤ past+i and
    /// mask[b, j] == 1) and finfo(dtype).min elsewhere. A large finite value instead of -inf (as HF does) keeps
    /// fully masked pad rows finite instead of NaN.
    /// </summary>
    public static Tensor CausalMask(Tensor mask2d, long past, long t, ScalarType dtype)
    {
        long s = mask2d.shape[1];
        var dev = mask2d.device;
        var q = torch.arange(past, past + t, dtype: ScalarType.Int64, device: dev).unsqueeze(1); // [T,1]
        var k = torch.arange(0, s, dtype: ScalarType.Int64, device: dev).unsqueeze(0);         // [1,S]
        var causal = k.le(q).unsqueeze(0).unsqueeze(0);                                         // [1,1,T,S]
        var keep = mask2d.to_type(ScalarType.Bool).unsqueeze(1).unsqueeze(1);                   // [B,1,1,S]
        var allowed = causal.logical_and(keep);
        var zero = torch.zeros(1, dtype: dtype, device: dev);
        var min = torch.full(1, torch.finfo(dtype).min, dtype: dtype, device: dev);
        return torch.where(allowed, zero, min);
    }

    /// <summary>Query head h uses kv head h / rep: [B, n_kv, S, D] → [B, n_kv·rep, S, D].</summary>
    public static Tensor RepeatKv(Tensor x, int rep)
    {
        if (rep == 1) return x;
        long b = x.shape[0], n = x.shape[1], s = x.shape[2], d = x.shape[3];
        return x.unsqueeze(2).expand(b, n, rep, s, d).reshape(b, n * rep, s, d);
    }

    /// <summary>
    /// True (default): attention runs through torch's scaled_dot_product_attention (fused CPU kernel; the
    /// [B, H, T, S] probabilities are not kept for backward) in float32, and in bf16 from
    /// <see cref="Bf16FusedMinKeys"/> keys on; otherwise eager. Measured forward + backward, 12 heads of 64, 2 threads
    /// (`bench --kernel-probe`, bench/results/kernel-probe.txt, noisy at the short end): float32 [4,·,128] fused 9–16 /
    /// eager 8–21 ms, [1,·,512] 26–47 / 51–63 ms, [1,·,1024] 60–129 / 690–829 ms; bf16 [4,·,128] 12–18 / 3–4 ms,
    /// [1,·,512] 21–26 / 10–18 ms, [1,·,1024] 46–55 / 196–233 ms (libtorch 2.10's CPU flash kernel has no fast bf16
    /// path for short sequences). False: <see cref="Eager"/> everywhere, the
    /// written-out reference the fused path is tested against.
    /// </summary>
    internal static bool UseFusedKernel { get => !t_eager; set => t_eager = !value; }

    // Per thread, so a test comparing the two paths cannot switch another test's forward.
    [ThreadStatic] static bool t_eager;

    /// <summary>Key length from which bf16 attention takes the fused kernel (eager wins at 512, fused 4× at 1024).</summary>
    internal const long Bf16FusedMinKeys = 1024;

    static bool Fused(ScalarType dtype, long keys) =>
        UseFusedKernel && (dtype == ScalarType.Float32 || (dtype == ScalarType.BFloat16 && keys >= Bf16FusedMinKeys));

    /// <summary>
    /// The additive mask for a forward, or null when plain causal masking is exact and the fused kernel will run:
    /// no cache/prefix (past 0) and no padding anywhere in the mask (the kernel applies causality itself).
    /// </summary>
    public static Tensor? MaskFor(Tensor mask2d, long past, long t, ScalarType dtype) =>
        Fused(dtype, mask2d.shape[1]) && past == 0 && mask2d.shape[1] == t && mask2d.ne(0).all().item<bool>() ? null : CausalMask(mask2d, past, t, dtype);

    /// <summary>softmax(q kᵀ / √D + mask) v; a null mask means causal without padding (see <see cref="MaskFor"/>).</summary>
    public static Tensor Compute(Tensor q, Tensor k, Tensor v, Tensor? additiveMask, bool gpt2Scaling, double dropout, bool training)
    {
        if (Fused(q.dtype, k.shape[2]))
            return nn.functional.scaled_dot_product_attention(q, k, v, additiveMask, training ? dropout : 0.0, additiveMask is null); // last argument: is_causal
        additiveMask ??= CausalMask(torch.ones(q.shape[0], k.shape[2], dtype: ScalarType.Int64, device: q.device), k.shape[2] - q.shape[2], q.shape[2], q.dtype);
        double d = q.shape[^1];
        return gpt2Scaling
            ? Eager(q, k, v, additiveMask, Math.Sqrt(d), divide: true, softmaxFloat32: false, dropout, training)
            : Eager(q, k, v, additiveMask, 1.0 / Math.Sqrt(d), divide: false, softmaxFloat32: true, dropout, training);
    }

    /// <summary>Eager attention: softmax(q kᵀ·scale + mask) v. Softmax in float32 when asked (Llama), like HF.</summary>
    public static Tensor Eager(Tensor q, Tensor k, Tensor v, Tensor additiveMask, double scale, bool divide,
        bool softmaxFloat32, double dropout, bool training)
    {
        var scores = q.matmul(k.transpose(-1, -2));
        // GPT-2 divides by sqrt(D); Llama multiplies by D^-0.5. Replicated to stay bit-close to HF.
        scores = divide ? scores.div(scale) : scores.mul(scale);
        scores = scores.add(additiveMask);
        var probs = softmaxFloat32 ? scores.softmax(-1, ScalarType.Float32).to_type(q.dtype) : scores.softmax(-1);
        if (training && dropout > 0) probs = nn.functional.dropout(probs, dropout, true);
        return probs.matmul(v);
    }
}
