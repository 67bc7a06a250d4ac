using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

/// <summary>A right-padded training batch: ids [B,T] int64, mask [B,T] (1 = real token), labels [B,T] with −100 on prompt and pad positions.</summary>
public sealed record TrainingBatch(Tensor InputIds, Tensor AttentionMask, Tensor Labels) : IDisposable
{
    /// <summary>Positions and sequence ids when rows hold several packed sequences (null otherwise).</summary>
    public SequencePacking? Packing { get; init; }

    public void Dispose() { InputIds.Dispose(); AttentionMask.Dispose(); Labels.Dispose(); Packing?.Dispose(); }
}

/// <summary>
/// A batch of the reference text set T for the KL penalty, with the pretrained log-probabilities log p_θp [B,T,V]
/// computed once (no_grad) before training starts.
/// </summary>
public sealed record ReferenceBatch(Tensor InputIds, Tensor AttentionMask, Tensor PretrainedLogProbs) : IDisposable
{
    /// <summary>The divisor of the KL mean: valid positions of the whole reference batch (under data parallelism this
    /// rank holds a shard of it); null = this batch's own mask sum.</summary>
    public long? PositionCount { get; init; }

    public void Dispose() { InputIds.Dispose(); AttentionMask.Dispose(); PretrainedLogProbs.Dispose(); }
}

/// <summary>The terms of one evaluation of the objective. Penalty terms are the weighted values (β·L2, λ·KL) in <see cref="Total"/>.</summary>
public sealed record ObjectiveTerms(Tensor Total, Tensor CrossEntropy, Tensor L2, Tensor KL, Tensor DistanceSquared);

/// <summary>
/// The finetuning objective in one place:
/// <code>total = CE + β·L2 + λ·KL</code>
/// <list type="bullet">
/// <item>CE = −log p_θ(y|x) on completion tokens only: HF's shifted cross-entropy, the mean over every non-ignored target
/// (label ≠ −100) of the whole batch, written as Σ token losses / target count with the count supplied by the trainer:
/// under data parallelism a rank holds a shard of the batch, divides its sum by the count of the whole (global) batch,
/// and the ranks' terms add up to the one-process mean. Prompt positions and pads carry label −100.</item>
/// <item>L2 = sqrt(‖θ−θ_p‖²) (the norm, not squared; value and gradient 0 where the sum is exactly 0), or ‖θ−θ_p‖²
/// with <see cref="L2Squared"/>. ‖θ−θ_p‖² is the method's <see cref="IFinetuneMethod.DistanceFromPretrainedSquared"/>.</item>
/// <item>KL = mean over the valid positions (mask 1) of the reference batch of Σ_w p_p(w)(log p_p(w) − log p_θ(w)), every
/// position including the last (its next token need not exist); the divisor is the whole reference batch's position
/// count (<see cref="ReferenceBatch.PositionCount"/>), for the same reason as CE's.</item>
/// </list>
/// The trainer computes p_p once per reference batch before the first step, under <see cref="IFinetuneMethod.UsePretrained"/>
/// (θ = θ_p then for every method, so full finetuning needs no second model copy). Memory cost of that cache:
/// reference tokens × vocabulary × 4 bytes (e.g. 2,000 tokens × 50,257 ≈ 400 MB), instead of a frozen model copy.
/// </summary>
public sealed class FinetuneObjective
{
    public const long IgnoreIndex = -100;

    public FinetuneObjective(double l2Penalty = 0, double klPenalty = 0, bool l2Squared = false)
    {
        if (l2Penalty < 0 || double.IsNaN(l2Penalty)) throw new ArgumentOutOfRangeException(nameof(l2Penalty), "β must be ≥ 0.");
        if (klPenalty < 0 || double.IsNaN(klPenalty)) throw new ArgumentOutOfRangeException(nameof(klPenalty), "λ must be ≥ 0.");
        L2Penalty = l2Penalty; KlPenalty = klPenalty; L2Squared = l2Squared;
    }

    public double L2Penalty { get; }
    public double KlPenalty { get; }
    public bool L2Squared { get; }

    /// <summary>
    /// Shifted CE: Σ over non-ignored targets / <paramref name="targetCount"/> (default: this batch's target count, i.e.
    /// the mean, HF's convention). Logits [B,T,V], labels [B,T].
    /// </summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor labels, long? targetCount = null)
    {
        long v = logits.shape[2];
        // Shift the labels, not the logits: position t predicts labels[t+1], the last position gets −100. Slicing
        // [B,T,V] logits would copy them (and their gradient) once more per step; a view of all positions costs nothing.
        var flatLogits = logits.reshape(-1, v);
        if (flatLogits.dtype != ScalarType.Float64) flatLogits = flatLogits.to_type(ScalarType.Float32);
        var shiftLabels = torch.cat([labels[.., 1..], torch.full(labels.shape[0], 1, IgnoreIndex, dtype: labels.dtype, device: labels.device)], 1).reshape(-1);
        long count = targetCount ?? shiftLabels.ne(IgnoreIndex).sum().item<long>();
        if (count == 0) throw NoTargets();
        return nn.functional.cross_entropy(flatLogits, shiftLabels, ignore_index: IgnoreIndex, reduction: nn.Reduction.Sum).div(count);
    }

    static InvalidOperationException NoTargets() => new("The batch has no completion token to train on (every label is −100).");

    /// <summary>Targets of a batch of these examples: labels ≠ −100 after the first position (the shifted labels CE scores).</summary>
    public static long CountTargets(IEnumerable<EncodedExample> examples)
    {
        long n = 0;
        foreach (var e in examples)
            for (int j = 1; j < e.Labels.Length; j++) if (e.Labels[j] != IgnoreIndex) n++;
        return n;
    }

    /// <summary>Per-target log p(label) [B, T−1] (0 where ignored) and the target mask [B, T−1] (float).</summary>
    public static (Tensor LogProbs, Tensor Mask) TargetLogProbs(Tensor logits, Tensor labels)
    {
        var lp = logits[.., ..^1, ..].log_softmax(-1);
        var tgt = labels[.., 1..];
        var mask = tgt.ne(IgnoreIndex);
        var safe = torch.where(mask, tgt, torch.zeros_like(tgt));
        var picked = lp.gather(-1, safe.unsqueeze(-1)).squeeze(-1);
        var m = mask.to_type(picked.dtype);
        return (picked.mul(m), m);
    }

    /// <summary>sqrt(s) with value and gradient 0 where s == 0 (a plain sqrt has an infinite gradient there).</summary>
    public static Tensor SafeSqrt(Tensor sumSquares)
    {
        var positive = sumSquares.gt(0);
        var safe = torch.where(positive, sumSquares, torch.ones_like(sumSquares));
        return torch.where(positive, safe.sqrt(), torch.zeros_like(sumSquares));
    }

    /// <summary>KL(p_p ‖ p_θ) per position [B,T] from log p_p and θ's logits.</summary>
    public static Tensor KlPerPosition(Tensor pretrainedLogProbs, Tensor logits)
    {
        var lq = logits.log_softmax(-1);
        return pretrainedLogProbs.exp().mul(pretrainedLogProbs.sub(lq)).sum(-1);
    }

    /// <summary>Σ of the per-position KL over positions where the mask is 1, / <paramref name="positionCount"/> (default: the mask's sum, i.e. the mean).</summary>
    public static Tensor Kl(Tensor pretrainedLogProbs, Tensor logits, Tensor attentionMask, long? positionCount = null)
    {
        var per = KlPerPosition(pretrainedLogProbs, logits);
        var m = attentionMask.to_type(per.dtype);
        var sum = per.mul(m).sum();
        return positionCount is long n ? sum.div(n) : sum.div(m.sum());
    }

    /// <summary>
    /// Evaluates CE + β·L2 + λ·KL with the method in effect (differentiable). Under data parallelism each rank passes
    /// its shard of the batch (null when it has no rows of it) and of the reference batch, the global
    /// <paramref name="targetCount"/>, and <paramref name="includeL2"/> on one rank only, so the ranks' totals add up to
    /// the one-process objective; L2 is still reported on every rank.
    /// </summary>
    public ObjectiveTerms Compute(IFinetuneMethod method, CausalLM model, TrainingBatch? batch, ReferenceBatch? reference,
        long? targetCount = null, bool includeL2 = true)
    {
        Tensor ce;
        if (batch is not null) ce = CrossEntropy(method.Logits(model, batch.InputIds, batch.AttentionMask, batch.Packing), batch.Labels, targetCount);
        else if (targetCount is 0) throw NoTargets();
        else ce = torch.zeros(1, dtype: ScalarType.Float32, device: model.Device).squeeze();
        var total = ce;
        Tensor l2, dist;
        if (L2Penalty > 0 && includeL2)
        {
            dist = method.DistanceFromPretrainedSquared();
            l2 = (L2Squared ? dist : SafeSqrt(dist)).to_type(ce.dtype);
            total = total.add(l2.mul(L2Penalty));
        }
        else
        {
            // Reported only: no graph (for full finetuning that graph would cost a transient copy of the weights).
            using (torch.no_grad())
            {
                dist = method.DistanceFromPretrainedSquared();
                l2 = (L2Squared ? dist : SafeSqrt(dist)).to_type(ce.dtype);
            }
        }
        Tensor kl;
        if (KlPenalty > 0 && reference != null)
        {
            var refLogits = method.Logits(model, reference.InputIds, reference.AttentionMask);
            kl = Kl(reference.PretrainedLogProbs, refLogits, reference.AttentionMask, reference.PositionCount).to_type(ce.dtype);
            total = total.add(kl.mul(KlPenalty));
        }
        else kl = torch.zeros(1, dtype: ce.dtype, device: ce.device).squeeze();
        return new ObjectiveTerms(total, ce, l2, kl, dist.detach());
    }

    /// <summary>log p_θp for a reference batch under the method's pretrained scope, no_grad.</summary>
    public static Tensor PretrainedLogProbs(IFinetuneMethod method, CausalLM model, Tensor inputIds, Tensor attentionMask)
    {
        using var _ = torch.no_grad();
        using var scope = method.UsePretrained(model);
        return method.Logits(model, inputIds, attentionMask).log_softmax(-1).detach();
    }
}
