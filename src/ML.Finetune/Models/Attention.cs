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
