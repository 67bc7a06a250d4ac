using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>Attention helpers shared by GPT-2 and the decoder families.</summary>
internal static class Attention
{
    /// <summary>
    /// Additive mask [B, 1, T, S] with 0 where query i (absolute position past+i) may see key j (j ≤ past+i and
    /// mask[b, j] == 1) and finfo(dtype).min elsewhere (see <see cref="AttentionMasks"/>, which builds every mask of a forward).
    /// </summary>
    public static Tensor CausalMask(Tensor mask2d, long past, long t, ScalarType dtype) =>
        new AttentionMasks(mask2d, past, t, dtype).For(null, mask2d.shape[1], allowImplicitCausal: false)!;

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
    /// Whether the fused kernel computes this attention exactly as written: it scales by head_dim^-0.5 only
    /// (TorchSharp's binding has no scale argument) and knows no score softcap (HF's sdpa ignores Gemma 2's softcap,
    /// so only eager is a reference there).
    /// </summary>
    public static bool CanFuse(ScalarType dtype, long keys, bool defaultScale, double? softcap) =>
        Fused(dtype, keys) && softcap is null && defaultScale;

    /// <summary>
    /// The additive mask for a forward without windows, or null when plain causal masking is exact and the fused
    /// kernel will run: no cache/prefix (past 0) and no padding anywhere in the mask (the kernel applies causality itself).
    /// </summary>
    public static Tensor? MaskFor(Tensor mask2d, long past, long t, ScalarType dtype) =>
        new AttentionMasks(mask2d, past, t, dtype).For(null, mask2d.shape[1], allowImplicitCausal: Fused(dtype, mask2d.shape[1]));

    /// <summary>softmax(q kᵀ / √D + mask) v; a null mask means causal without padding (see <see cref="MaskFor"/>).</summary>
    public static Tensor Compute(Tensor q, Tensor k, Tensor v, Tensor? additiveMask, bool gpt2Scaling, double dropout, bool training)
    {
        double d = q.shape[^1];
        return gpt2Scaling
            ? Compute(q, k, v, additiveMask, Math.Sqrt(d), divide: true, softmaxFloat32: false, softcap: null, dropout, training)
            : Compute(q, k, v, additiveMask, Math.Pow(d, -0.5), divide: false, softmaxFloat32: true, softcap: null, dropout, training);
    }

    /// <summary>
    /// Attention with a given scale (GPT-2 divides by √D; the decoder families multiply by head_dim^-0.5 or Gemma's
    /// query_pre_attn_scalar^-0.5) and an optional score softcap c·tanh(s/c) applied before the mask (Gemma 2).
    /// Fused when <see cref="CanFuse"/>, eager otherwise; a null mask means plain causal.
    /// </summary>
    public static Tensor Compute(Tensor q, Tensor k, Tensor v, Tensor? additiveMask, double scale, bool divide, bool softmaxFloat32,
        double? softcap, double dropout, bool training)
    {
        long d = q.shape[^1];
        bool defaultScale = divide ? scale == Math.Sqrt(d) : scale == Math.Pow(d, -0.5);
        if (CanFuse(q.dtype, k.shape[2], defaultScale, softcap))
            return nn.functional.scaled_dot_product_attention(q, k, v, additiveMask, training ? dropout : 0.0, additiveMask is null); // last argument: is_causal
        additiveMask ??= CausalMask(torch.ones(q.shape[0], k.shape[2], dtype: ScalarType.Int64, device: q.device), k.shape[2] - q.shape[2], q.shape[2], q.dtype);
        return Eager(q, k, v, additiveMask, scale, divide, softmaxFloat32, dropout, training, softcap);
    }

    /// <summary>Eager attention: softmax(q kᵀ·scale [softcapped] + mask) v. Softmax in float32 when asked (the decoder families), like HF.</summary>
    public static Tensor Eager(Tensor q, Tensor k, Tensor v, Tensor additiveMask, double scale, bool divide,
        bool softmaxFloat32, double dropout, bool training, double? softcap = null)
    {
        var scores = q.matmul(k.transpose(-1, -2));
        // GPT-2 divides by sqrt(D); the others multiply by a scale. Replicated to stay bit-close to HF.
        scores = divide ? scores.div(scale) : scores.mul(scale);
        if (softcap is double c) scores = scores.div(c).tanh().mul(c);
        scores = scores.add(additiveMask);
        var probs = softmaxFloat32 ? scores.softmax(-1, ScalarType.Float32).to_type(q.dtype) : scores.softmax(-1);
        if (training && dropout > 0) probs = nn.functional.dropout(probs, dropout, true);
        return probs.matmul(v);
    }
}
