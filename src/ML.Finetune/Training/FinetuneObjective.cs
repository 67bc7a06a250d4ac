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
/// A batch of the reference text set T for the KL penalty. p_θp is computed on the fly from θ_p
/// (<see cref="PretrainedModel"/>) at every use, unless <see cref="TopK"/> holds a top-k cache of it.
/// </summary>
public sealed record ReferenceBatch(Tensor InputIds, Tensor AttentionMask) : IDisposable
{
    /// <summary>The divisor of the KL mean: valid positions of the whole reference batch (under data parallelism this
    /// rank holds a shard of it); null = this batch's own mask sum.</summary>
    public long? PositionCount { get; init; }

    /// <summary>The top-k cache of log p_θp at this batch's valid positions (<see cref="KlReferenceMode.TopKCache"/>); null = on the fly.</summary>
    public TopKLogProbs? TopK { get; init; }

    public void Dispose() { InputIds.Dispose(); AttentionMask.Dispose(); TopK?.Dispose(); }
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
/// Logits never exist for a whole batch: the LM head runs only on the rows a term needs (targets for CE, valid
/// positions for KL), a chunk of rows at a time (<see cref="ChunkedHead"/>), so memory holds at most a chunk of
/// [rows, V] float32 logits. p_θp comes from θ_p on the fly (<see cref="PretrainedModel"/>: the adapter disabled, or a
/// frozen copy for full finetuning), one no-grad forward per reference batch, so the KL's memory does not depend on the
/// size of the reference set; or from a top-k cache (<see cref="TopKLogProbs"/>). The per-row equations are
/// <see cref="TokenLogProbs"/>, <see cref="KlRows"/> and <see cref="KlRowsTopK"/>.
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
    /// <summary>Rows of logits per chunk of the LM head; null = <see cref="ChunkedHead.DefaultChunkElements"/> / V.</summary>
    public long? LogitsChunkRows { get; init; }

    // ---- The per-row equations ----

    /// <summary>log p(target) per row: log_softmax(logits)[target]. Logits [n, V], targets [n] (valid ids).</summary>
    public static Tensor TokenLogProbs(Tensor logits, Tensor targets) =>
        Float(logits).log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1);

    /// <summary>KL(p_p ‖ p_θ) per row: Σ_w p_p(w)(log p_p(w) − log p_θ(w)). Log p_p [n, V], θ's logits [n, V].</summary>
    public static Tensor KlRows(Tensor pretrainedLogProbs, Tensor logits)
    {
        var lq = Float(logits).log_softmax(-1);
        return pretrainedLogProbs.exp().mul(pretrainedLogProbs.sub(lq)).sum(-1);
    }

    /// <summary>
    /// The top-k approximation of <see cref="KlRows"/>: the exact KL between p_p and p_θ coarsened to the k tokens
    /// the cache kept plus one bucket for every other token, Σ_{w∈K} p_p(w)(log p_p(w) − log p_θ(w)) +
    /// p_p(rest)(log p_p(rest) − log p_θ(rest)). It is never above the exact KL (data processing), and the gap is
    /// p_p(rest) · KL(p_p(·|rest) ‖ p_θ(·|rest)); both vanish at θ = θ_p (see docs/training-memory.md).
    /// </summary>
    public static Tensor KlRowsTopK(Tensor topLogProbs, Tensor topIndices, Tensor restLogProb, Tensor logits)
    {
        var lq = Float(logits).log_softmax(-1);
        var idx = topIndices.to_type(ScalarType.Int64);
        var kept = topLogProbs.exp().mul(topLogProbs.sub(lq.gather(-1, idx))).sum(-1);
        var lqRest = lq.scatter(-1, idx, torch.full_like(idx, double.NegativeInfinity, dtype: lq.dtype)).logsumexp(-1);
        var pRest = restLogProb.exp();
        // p_p(rest) = 0 (a distribution concentrated on the kept tokens) contributes 0, not 0·(−∞ − x).
        var rest = torch.where(pRest.gt(0), pRest.mul(restLogProb.sub(lqRest)), torch.zeros_like(pRest));
        return kept.add(rest);
    }

    static Tensor Float(Tensor logits) => logits.dtype is ScalarType.Float32 or ScalarType.Float64 ? logits : logits.to_type(ScalarType.Float32);

    // ---- Positions ----

    /// <summary>Targets [B·T] of the shifted CE: position t predicts labels[t+1]; the last position of a row gets −100.</summary>
    public static Tensor ShiftedTargets(Tensor labels) =>
        torch.cat([labels[.., 1..], torch.full(labels.shape[0], 1, IgnoreIndex, dtype: labels.dtype, device: labels.device)], 1).reshape(-1);

    /// <summary>Rows of <paramref name="hidden"/> [B, T, d] (flattened to [B·T, d]) at <paramref name="flatIndex"/>.</summary>
    static Tensor Rows(Tensor hidden, Tensor flatIndex) => hidden.reshape(-1, hidden.shape[^1]).index_select(0, flatIndex);

    static InvalidOperationException NoTargets() => new("The batch has no completion token to train on (every label is −100).");

    /// <summary>Targets of a batch of these examples: labels ≠ −100 after the first position (the shifted labels CE scores).</summary>
    public static long CountTargets(IEnumerable<EncodedExample> examples)
    {
        long n = 0;
        foreach (var e in examples)
            for (int j = 1; j < e.Labels.Length; j++) if (e.Labels[j] != IgnoreIndex) n++;
        return n;
    }

    // ---- Cross-entropy ----

    /// <summary>
    /// Shifted CE from final hidden states [B, T, d] (<see cref="IFinetuneMethod.HiddenStates"/>): the LM head runs on
    /// the target positions only, in chunks. Σ −log p(target) / <paramref name="targetCount"/> (default: this batch's
    /// target count, i.e. the mean, HF's convention). Differentiable.
    /// </summary>
    public static Tensor CrossEntropy(CausalLM model, Tensor hidden, Tensor labels, long? targetCount = null, long? chunkRows = null)
    {
        var targets = ShiftedTargets(labels);
        var at = targets.ne(IgnoreIndex).nonzero().squeeze(1);
        long count = targetCount ?? at.shape[0];
        if (count == 0) throw NoTargets();
        var y = targets.index_select(0, at);
        var sum = ChunkedHead.LossSum(model, Rows(hidden, at), (logits, s, n) => TokenLogProbs(logits, y.narrow(0, s, n)).sum().neg(), chunkRows);
        return sum.div(count);
    }

    /// <summary>The same CE from full logits [B, T, V] (for callers that have them; training never forms them).</summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor labels, long? targetCount = null)
    {
        var targets = ShiftedTargets(labels);
        var at = targets.ne(IgnoreIndex).nonzero().squeeze(1);
        long count = targetCount ?? at.shape[0];
        if (count == 0) throw NoTargets();
        return TokenLogProbs(Rows(logits, at), targets.index_select(0, at)).sum().neg().div(count);
    }

    /// <summary>
    /// Per-target log p(label) [B, T−1] (0 where ignored) and the target mask [B, T−1] (float) from final hidden states,
    /// the LM head on target positions only, in chunks, without gradients: validation and scoring.
    /// </summary>
    public static (Tensor LogProbs, Tensor Mask) TargetLogProbs(CausalLM model, Tensor hidden, Tensor labels, long? chunkRows = null)
    {
        var (at, y) = TargetsAt(labels);
        var lp = ChunkedHead.MapRows(model, Rows(hidden, at), (logits, s, n) => TokenLogProbs(logits, y.narrow(0, s, n)), chunkRows);
        return Scatter(lp, at, labels);
    }

    /// <summary>As <see cref="TargetLogProbs(CausalLM, Tensor, Tensor, long?)"/> from full logits [B, T, V].</summary>
    public static (Tensor LogProbs, Tensor Mask) TargetLogProbs(Tensor logits, Tensor labels)
    {
        var (at, y) = TargetsAt(labels);
        return Scatter(TokenLogProbs(Rows(logits, at), y), at, labels);
    }

    static (Tensor At, Tensor Targets) TargetsAt(Tensor labels)
    {
        var targets = ShiftedTargets(labels);
        var at = targets.ne(IgnoreIndex).nonzero().squeeze(1);
        return (at, targets.index_select(0, at));
    }

    /// <summary>Per-row values back to [B, T−1] (the last position never has a target), 0 elsewhere, with the mask.</summary>
    static (Tensor, Tensor) Scatter(Tensor values, Tensor at, Tensor labels)
    {
        long b = labels.shape[0], t = labels.shape[1];
        var flat = torch.zeros(b * t, dtype: values.dtype, device: values.device).index_copy(0, at, values).view(b, t);
        var mask = torch.zeros(b * t, dtype: values.dtype, device: values.device).index_fill(0, at, 1.0).view(b, t);
        return (flat[.., ..^1], mask[.., ..^1]);
    }

    // ---- KL ----

    /// <summary>
    /// Σ over the valid positions (mask 1) of the reference batch of KL(p_p ‖ p_θ) / <paramref name="positionCount"/>
    /// (default: the mask's sum, i.e. the mean). <paramref name="hidden"/> [B, T, d] are θ's final hidden states on the
    /// batch; p_p comes from <paramref name="pretrained"/> (one no-grad forward, then the head per chunk) or from
    /// <paramref name="topK"/>. Differentiable in θ.
    /// </summary>
    public static Tensor Kl(CausalLM model, Tensor hidden, Tensor inputIds, Tensor attentionMask, PretrainedModel? pretrained,
        TopKLogProbs? topK = null, long? positionCount = null, long? chunkRows = null)
    {
        var at = attentionMask.reshape(-1).ne(0).nonzero().squeeze(1);
        long count = positionCount ?? at.shape[0];
        ChunkedHead.RowLoss perChunk;
        if (topK is not null)
        {
            if (topK.Rows != at.shape[0]) throw new ArgumentException($"the top-k cache holds {topK.Rows} positions, the reference batch has {at.shape[0]}");
            perChunk = (logits, s, n) => KlRowsTopK(topK.LogProbs.narrow(0, s, n), topK.Indices.narrow(0, s, n), topK.RestLogProb.narrow(0, s, n), logits).sum();
        }
        else
        {
            if (pretrained is null) throw new ArgumentNullException(nameof(pretrained), "the KL needs θ_p (a PretrainedModel) or a top-k cache");
            var reference = Rows(pretrained.HiddenStates(inputIds, attentionMask), at);
            perChunk = (logits, s, n) => KlRows(pretrained.LogProbs(reference.narrow(0, s, n)), logits).sum();
        }
        return ChunkedHead.LossSum(model, Rows(hidden, at), perChunk, chunkRows).div(count);
    }

    /// <summary>KL(p_p ‖ p_θ) per position [B, T] from full log p_p and θ's logits [B, T, V] (for callers that have them).</summary>
    public static Tensor KlPerPosition(Tensor pretrainedLogProbs, Tensor logits) => KlRows(pretrainedLogProbs, logits);

    /// <summary>The mean KL from full log p_p and logits [B, T, V] over the positions where the mask is 1 (for callers that have them).</summary>
    public static Tensor Kl(Tensor pretrainedLogProbs, Tensor logits, Tensor attentionMask, long? positionCount = null)
    {
        var per = KlRows(pretrainedLogProbs, logits);
        var m = attentionMask.to_type(per.dtype);
        var sum = per.mul(m).sum();
        return positionCount is long n ? sum.div(n) : sum.div(m.sum());
    }

    /// <summary>sqrt(s) with value and gradient 0 where s == 0 (a plain sqrt has an infinite gradient there).</summary>
    public static Tensor SafeSqrt(Tensor sumSquares)
    {
        var positive = sumSquares.gt(0);
        var safe = torch.where(positive, sumSquares, torch.ones_like(sumSquares));
        return torch.where(positive, safe.sqrt(), torch.zeros_like(sumSquares));
    }

    /// <summary>
    /// Evaluates CE + β·L2 + λ·KL with the method in effect (differentiable). Under data parallelism each rank passes
    /// its shard of the batch (null when it has no rows of it) and of the reference batch, the global
    /// <paramref name="targetCount"/>, and <paramref name="includeL2"/> on one rank only, so the ranks' totals add up to
    /// the one-process objective; L2 is still reported on every rank. <paramref name="pretrained"/> is θ_p for the KL
    /// (default: <see cref="PretrainedModel.For"/>(method, model)); not used when the reference batch has a top-k cache.
    /// </summary>
    public ObjectiveTerms Compute(IFinetuneMethod method, CausalLM model, TrainingBatch? batch, ReferenceBatch? reference,
        long? targetCount = null, bool includeL2 = true, PretrainedModel? pretrained = null)
    {
        Tensor ce;
        if (batch is not null)
            ce = CrossEntropy(model, method.HiddenStates(model, batch.InputIds, batch.AttentionMask, batch.Packing), batch.Labels, targetCount, LogitsChunkRows);
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
            if (reference.TopK is null) pretrained ??= PretrainedModel.For(method, model);
            var hidden = method.HiddenStates(model, reference.InputIds, reference.AttentionMask);
            kl = Kl(model, hidden, reference.InputIds, reference.AttentionMask, pretrained, reference.TopK, reference.PositionCount, LogitsChunkRows).to_type(ce.dtype);
            total = total.add(kl.mul(KlPenalty));
        }
        else kl = torch.zeros(1, dtype: ce.dtype, device: ce.device).squeeze();
        return new ObjectiveTerms(total, ce, l2, kl, dist.detach());
    }
}
