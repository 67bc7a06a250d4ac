using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>
/// Rotary position embeddings: every rope type's inverse frequencies, the cos/sin tables and their application to
/// q and k, in one place. Each step is written with the same float32 tensor operations transformers 5.x uses
/// (<c>1/x</c> is <c>reciprocal</c>, Python's <c>a/t</c> is <c>reciprocal(t)·a</c>), so the frequencies match HF's
/// bit for bit. Frequencies depend on the forward only for "dynamic" and "longrope", through
/// L = max(position_ids) + 1 over the whole batch (HF's batch-wide rule; a cached generation step has its own L and
/// cached keys are never re-rotated).
/// </summary>
public static class RotaryEmbedding
{
    /// <summary>
    /// The inverse frequencies [rotary_dim/2] (float32) and the factor cos/sin are multiplied by, for a forward whose
    /// positions reach <paramref name="seqLen"/> = max(position_ids) + 1.
    /// </summary>
    public static (Tensor InvFreq, double AttentionScaling) InverseFrequencies(RopeParameters p, int headDim, int maxPositionEmbeddings,
        long seqLen, Device? device = null)
    {
        int dim = p.RotaryDim(headDim);
        // torch.arange(0, dim, 2, dtype=int64).float() / dim
        Tensor Exponents() => torch.arange(0, dim, 2, dtype: ScalarType.Int64, device: device).to_type(ScalarType.Float32).div(dim);
        Tensor Default(double theta) => torch.pow(theta, Exponents()).reciprocal();
        switch (p.Type)
        {
            case "default":
                return (Default(p.Theta), 1.0);
            case "linear":
                return (Default(p.Theta).div(p.Factor!.Value), 1.0);
            case "dynamic":
                return (Dynamic(p, dim, maxPositionEmbeddings, seqLen, device, Exponents), 1.0);
            case "llama3":
                return (Llama3(p, Default(p.Theta)), 1.0);
            case "yarn":
                return Yarn(p, dim, maxPositionEmbeddings, device, Exponents);
            case "longrope":
                return LongRope(p, dim, maxPositionEmbeddings, seqLen, device, Exponents);
            default:
                throw new NotSupportedException($"rope type '{p.Type}' (supported: {string.Join(", ", RopeParameters.SupportedTypes)})");
        }
    }

    /// <summary>NTK: theta' = theta·(factor·L/max_pos − (factor−1))^(dim/(dim−2)) once L &gt; max_position_embeddings, in float32 as HF.</summary>
    static Tensor Dynamic(RopeParameters p, int dim, int maxPos, long seqLen, Device? device, Func<Tensor> exponents)
    {
        if (seqLen <= maxPos) return torch.pow(p.Theta, exponents()).reciprocal(); // HF's init-time frequencies
        double factor = p.Factor!.Value;
        var len = torch.tensor(seqLen, dtype: ScalarType.Int64, device: device);
        var theta = len.mul(factor).div(maxPos).sub(factor - 1).pow((double)dim / (dim - 2)).mul(p.Theta); // 0-dim float32
        return torch.pow(theta, exponents()).reciprocal();
    }

    /// <summary>Llama 3.1: bands with wavelength below L0/high_freq_factor unchanged, above L0/low_freq_factor ÷ factor, smoothed between.</summary>
    static Tensor Llama3(RopeParameters p, Tensor invFreq)
    {
        double factor = p.Factor!.Value, low = p.LowFreqFactor!.Value, high = p.HighFreqFactor!.Value;
        double old = p.OriginalMaxPositionEmbeddings!.Value;
        double lowWavelen = old / low, highWavelen = old / high;
        var wavelen = invFreq.reciprocal().mul(2 * Math.PI);
        var scaled = torch.where(wavelen.gt(lowWavelen), invFreq.div(factor), invFreq);
        var smooth = wavelen.reciprocal().mul(old).sub(low).div(high - low);
        var smoothed = smooth.neg().add(1).mul(scaled).div(factor).add(smooth.mul(scaled));
        var medium = wavelen.lt(highWavelen).logical_not().logical_and(wavelen.gt(lowWavelen).logical_not());
        return torch.where(medium, smoothed, scaled);
    }

    /// <summary>YaRN: a linear ramp between extrapolated (original) and interpolated (÷factor) bands, cos/sin × mscale.</summary>
    static (Tensor, double) Yarn(RopeParameters p, int dim, int maxPos, Device? device, Func<Tensor> exponents)
    {
        double orig = p.OriginalMaxPositionEmbeddings!.Value;
        double factor = p.Factor ?? maxPos / orig;
        static double MscaleOf(double scale, double m = 1) => scale <= 1 ? 1.0 : 0.1 * m * Math.Log(scale) + 1.0;
        double attention = p.AttentionFactor
            ?? (p.Mscale is double ms && ms != 0 && p.MscaleAllDim is double mad && mad != 0 ? MscaleOf(factor, ms) / MscaleOf(factor, mad) : MscaleOf(factor));
        double betaFast = p.BetaFast is double bf && bf != 0 ? bf : 32, betaSlow = p.BetaSlow is double bs && bs != 0 ? bs : 1;
        double CorrectionDim(double rotations) => dim * Math.Log(orig / (rotations * 2 * Math.PI)) / (2 * Math.Log(p.Theta));
        double low = CorrectionDim(betaFast), high = CorrectionDim(betaSlow);
        if (p.Truncate) { low = Math.Floor(low); high = Math.Ceiling(high); }
        low = Math.Max(low, 0); high = Math.Min(high, dim - 1);
        if (low == high) high += 0.001; // HF: prevent a zero-width ramp

        var posFreqs = torch.pow(p.Theta, exponents());
        var extrapolation = posFreqs.reciprocal();
        var interpolation = posFreqs.mul(factor).reciprocal();
        var ramp = torch.arange(dim / 2, dtype: ScalarType.Float32, device: device).sub(low).div(high - low).clamp(0, 1);
        var extrapolationFactor = ramp.neg().add(1);
        var inv = interpolation.mul(extrapolationFactor.neg().add(1)).add(extrapolation.mul(extrapolationFactor));
        return (inv, attention);
    }

    /// <summary>LongRoPE (Phi-3.5/Phi-4-mini): frequencies divided per band by short_factor, or long_factor once L exceeds the original context.</summary>
    static (Tensor, double) LongRope(RopeParameters p, int dim, int maxPos, long seqLen, Device? device, Func<Tensor> exponents)
    {
        double orig = p.OriginalMaxPositionEmbeddings!.Value;
        double factor = p.Factor ?? maxPos / orig;
        double attention = p.AttentionFactor ?? (factor <= 1.0 ? 1.0 : Math.Sqrt(1 + Math.Log(factor) / Math.Log(orig)));
        var ext = torch.tensor((seqLen > orig ? p.LongFactor! : p.ShortFactor!).Select(x => (float)x).ToArray(), device: device);
        return (ext.mul(torch.pow(p.Theta, exponents())).reciprocal(), attention);
    }

    /// <summary>
    /// cos and sin [B, 1, T, rotary_dim] for the given positions [B, T]: computed in float32 (also in float64 and
    /// bf16 runs, as HF does), laid out [f, f] (rotate_half convention), times the attention scaling, then cast.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor invFreq, double attentionScaling, Tensor positions, ScalarType dtype)
    {
        var freqs = positions.to_type(ScalarType.Float32).unsqueeze(-1).mul(invFreq.to(positions.device)); // [B,T,dim/2]
        var emb = torch.cat([freqs, freqs], -1);
        Tensor cos = emb.cos(), sin = emb.sin();
        if (attentionScaling != 1.0) { cos = cos.mul(attentionScaling); sin = sin.mul(attentionScaling); }
        return (cos.to_type(dtype).unsqueeze(1), sin.to_type(dtype).unsqueeze(1));
    }

    /// <summary>x·cos + rotate_half(x)·sin on the first rotary_dim channels of each head; the rest pass through.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long rot = cos.shape[^1], d = x.shape[^1];
        if (rot == d) return x.mul(cos).add(RotateHalf(x).mul(sin));
        var xr = x.narrow(-1, 0, rot);
        return torch.cat([xr.mul(cos).add(RotateHalf(xr).mul(sin)), x.narrow(-1, rot, d - rot)], -1);
    }

    static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        return torch.cat([x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)], -1);
    }
}
