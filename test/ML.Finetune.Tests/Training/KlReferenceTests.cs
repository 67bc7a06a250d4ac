using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;
using static ML.Finetune.Tests.Training.MemoryPathRuns;

namespace ML.Finetune.Tests.Training;

/// <summary>
/// The KL penalty without a cache of p_θp: θ_p's distribution computed on the fly (the adapter disabled, or full
/// finetuning's frozen copy) and the KL run through the chunked head, against the previous exact path (log p_θp for the
/// whole batch cached while θ = θ_p, then the KL over full [B, T, V] logits); and the top-k cache against the exact KL.
/// </summary>
public class KlReferenceTests
{
    /// <summary>The previous path: cached log p_θp [B, T, V] (taken at θ = θ_p under the method's pretrained scope).</summary>
    static Tensor CachedPretrainedLogProbs(IFinetuneMethod method, CausalLM model, Tensor ids, Tensor mask)
    {
        using var _ = no_grad();
        using var scope = method.UsePretrained(model);
        return method.Logits(model, ids, mask).log_softmax(-1).detach();
    }

    [Theory, MemberData(nameof(All), MemberType = typeof(MemoryPathRuns))]
    public void OnTheFlyKl_EqualsTheCachedExactKl_InValueAndGradients(string model, string method)
    {
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Folder(model), method, nudge: false);
        using var _m = m;
        using var texts = TextBatch(Texts());
        var cached = CachedPretrainedLogProbs(meth, m, texts.InputIds, texts.AttentionMask);
        Nudge(meth, 0.02); // θ leaves θ_p: the KL and its gradient are non-zero
        var full = LossAndGrads(meth, () => FinetuneObjective.Kl(cached, meth.Logits(m, texts.InputIds, texts.AttentionMask), texts.AttentionMask));
        var onTheFly = LossAndGrads(meth, () => FinetuneObjective.Kl(m, meth.HiddenStates(m, texts.InputIds, texts.AttentionMask),
            texts.InputIds, texts.AttentionMask, PretrainedModel.For(meth, m), chunkRows: 3));
        Assert.True(full.Loss > 1e-4, $"KL {full.Loss}: θ should differ from θ_p");
        Assert.Equal(full.Loss, onTheFly.Loss, 1e-5);
        SameGradients(full.Grads, onTheFly.Grads, atol: 1e-6, rtol: 1e-5, $"{model}/{method}");
        (meth as IDisposable)?.Dispose();
    }

    [Fact]
    public void FullFinetuning_FrozenCopy_SharesTheThetaPTensors_AndStaysAtThetaP()
    {
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Fixtures.Model("tiny-llama"), "full", nudge: false);
        using var _m = m; using var _f = (IDisposable)meth;
        using var texts = TextBatch(Texts());
        var before = m.Forward(new CausalLMInput { InputIds = texts.InputIds, AttentionMask = texts.AttentionMask }).Logits.log_softmax(-1).detach();
        var copy = meth.PretrainedCopy(m);
        Assert.Same(copy, meth.PretrainedCopy(m));
        Assert.All(copy.parameters(), p => Assert.False(p.requires_grad));
        Nudge(meth, 0.05); // training moves θ; θ_p must not move
        var p = PretrainedModel.For(meth, m).FullLogProbs(texts.InputIds, texts.AttentionMask);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(p, before));
        // No extra copy: every copy parameter is a view of a tensor the method already keeps for the distance.
        long copyBytes = copy.parameters().Sum(t => t.NumberOfElements * t.ElementSize);
        Assert.Equal(copyBytes, meth.TrainableParameters.Sum(t => t.Parameter.NumberOfElements * t.Parameter.ElementSize));
        var distance = meth.DistanceFromPretrainedSquared().item<float>();
        using (no_grad()) foreach (var c in copy.parameters()) c.add_(1.0f);
        Assert.NotEqual(distance, meth.DistanceFromPretrainedSquared().item<float>()); // same storage as the distance's θ_p
    }

    [Fact]
    public void TopK_WithAllButOneToken_IsTheExactKl()
    {
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Fixtures.Model("tiny-llama"), "lora", nudge: false);
        using var _m = m;
        using var texts = TextBatch(Texts());
        var pretrained = PretrainedModel.For(meth, m);
        using var topK = TopKLogProbs.Compute(m, pretrained, texts.InputIds, texts.AttentionMask, k: 5000, chunkRows: 4); // capped at V − 1
        Assert.Equal(m.Config.VocabSize - 1, topK.LogProbs.shape[1]);
        Nudge(meth, 0.02);
        Tensor Hidden() => meth.HiddenStates(m, texts.InputIds, texts.AttentionMask);
        var exact = LossAndGrads(meth, () => FinetuneObjective.Kl(m, Hidden(), texts.InputIds, texts.AttentionMask, pretrained, chunkRows: 3));
        var approx = LossAndGrads(meth, () => FinetuneObjective.Kl(m, Hidden(), texts.InputIds, texts.AttentionMask, null, topK, chunkRows: 3));
        Assert.True(exact.Loss > 1e-4);
        Assert.Equal(exact.Loss, approx.Loss, 1e-5);
        SameGradients(exact.Grads, approx.Grads, atol: 1e-6, rtol: 1e-4, "top-(V−1)");
    }

    [Fact]
    public void TopK_IsALowerBound_MissingExactlyTheRestBucketsConditionalKl()
    {
        // KL(p‖q) = KL over (top k + rest) + p(rest)·KL(p(·|rest) ‖ q(·|rest)), checked per position in float64.
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Fixtures.Model("tiny-qwen2"), "lora", nudge: false);
        using var _m = m;
        using var texts = TextBatch(Texts());
        var pretrained = PretrainedModel.For(meth, m);
        const int k = 5;
        using var topK = TopKLogProbs.Compute(m, pretrained, texts.InputIds, texts.AttentionMask, k);
        Nudge(meth, 0.05);
        using var _ = no_grad();
        var at = texts.AttentionMask.reshape(-1).ne(0).nonzero().squeeze(1);
        var logits = meth.Logits(m, texts.InputIds, texts.AttentionMask).reshape(-1, m.Config.VocabSize).index_select(0, at);
        var lp = pretrained.FullLogProbs(texts.InputIds, texts.AttentionMask).reshape(-1, m.Config.VocabSize).index_select(0, at).to_type(ScalarType.Float64);
        var lq = logits.to_type(ScalarType.Float64).log_softmax(-1);
        var exact = FinetuneObjective.KlRows(lp, lq);
        var approx = FinetuneObjective.KlRowsTopK(topK.LogProbs, topK.Indices, topK.RestLogProb, logits).to_type(ScalarType.Float64);
        var inTop = zeros_like(lp, dtype: ScalarType.Bool).scatter(-1, topK.Indices.to_type(ScalarType.Int64), ones(at.shape[0], k, dtype: ScalarType.Bool));
        var restP = lp.exp().masked_fill(inTop, 0); var restQ = lq.exp().masked_fill(inTop, 0);
        var pRest = restP.sum(-1); var qRest = restQ.sum(-1);
        var pCond = restP.div(pRest.unsqueeze(-1)); var qCond = restQ.div(qRest.unsqueeze(-1));
        var condKl = where(pCond.gt(0), pCond.mul(pCond.log().sub(qCond.log())), zeros_like(pCond)).sum(-1);
        var gap = exact.sub(approx);
        Assert.True(gap.min().item<double>() > -1e-6, "the top-k KL must not exceed the exact KL");
        Assert.True(gap.max().item<double>() > 1e-4, "with k = 5 of 1,000 tokens the rest bucket should hide something");
        Assert.True(Fixtures.MaxAbsDiff(gap, pRest.mul(condKl)) < 1e-5);
        // The cache holds what it says: the k largest log p_θp and the log of the remaining mass.
        var (top, _) = lp.topk(k, -1);
        Assert.True(Fixtures.MaxAbsDiff(topK.LogProbs.to_type(ScalarType.Float64), top) < 1e-5);
        Assert.True(Fixtures.MaxAbsDiff(topK.RestLogProb.to_type(ScalarType.Float64), pRest.log()) < 1e-5);
        Assert.Equal(at.shape[0] * (8L * k + 4), topK.Bytes);
    }

    [Fact]
    public void Trainer_TopKCacheWithAllButOneToken_TrainsLikeOnTheFly_AndKeepsNoFullDistribution()
    {
        using var scope = NewDisposeScope();
        List<TrainingRecord> Run(KlReferenceMode mode)
        {
            var (m, meth) = Create(Fixtures.Model("tiny-gpt2"), "lora", nudge: false);
            using var _m = m;
            var trainer = new FinetuneTrainer(new TrainerOptions
            {
                LearningRate = 0.05, Optimizer = OptimizerKind.Sgd, MaxSteps = 3, BatchSize = 2, Shuffle = false, KlPenalty = 0.7,
                KlReference = mode, KlTopK = 999, LogitsChunkRows = 4, TuneMalloc = false,
            }, padId: 0);
            return trainer.Train(m, meth, Examples(), referenceTexts: Texts()).Records.ToList();
        }
        var exact = Run(KlReferenceMode.OnTheFly);
        var topK = Run(KlReferenceMode.TopKCache);
        Assert.True(exact[^1].KL > 1e-5, "the KL should grow as θ leaves θ_p");
        for (int s = 0; s < exact.Count; s++)
        {
            Assert.Equal(exact[s].KL, topK[s].KL, 1e-5);
            Assert.Equal(exact[s].TrainLoss, topK[s].TrainLoss, 1e-5);
        }
    }
}
