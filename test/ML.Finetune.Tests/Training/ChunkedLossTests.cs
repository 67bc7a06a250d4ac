using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;
using static ML.Finetune.Tests.Training.MemoryPathRuns;

namespace ML.Finetune.Tests.Training;

/// <summary>
/// The loss without full logits (<see cref="ChunkedHead"/>) against the full-logits path it replaces: the LM head on
/// every position ([B, T, V] float32 logits), then the shifted cross-entropy over all of them with −100 ignored, as
/// the objective computed it before. Same value and same gradients of every trained tensor, for every family and
/// method, with chunks of 3 rows (so every batch spans several chunks, and the last one is partial).
/// </summary>
public class ChunkedLossTests
{
    const long ChunkRows = 3;

    /// <summary>The previous objective's CE: all [B·T, V] logits, labels shifted, summed, divided by the target count.</summary>
    static Tensor FullLogitsCrossEntropy(Tensor logits, Tensor labels)
    {
        var flat = logits.reshape(-1, logits.shape[2]).to_type(ScalarType.Float32);
        var shifted = cat([labels[.., 1..], full(labels.shape[0], 1, -100L, dtype: labels.dtype)], 1).reshape(-1);
        long count = shifted.ne(-100).sum().item<long>();
        return nn.functional.cross_entropy(flat, shifted, ignore_index: -100, reduction: nn.Reduction.Sum).div(count);
    }

    [Theory, MemberData(nameof(All), MemberType = typeof(MemoryPathRuns))]
    public void ChunkedCrossEntropy_EqualsFullLogits_InValueAndGradients(string model, string method)
    {
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Folder(model), method);
        using var _m = m;
        using var batch = FinetuneTrainer.Collate(Examples(), 0);
        var full = LossAndGrads(meth, () => FullLogitsCrossEntropy(meth.Logits(m, batch.InputIds, batch.AttentionMask), batch.Labels));
        var chunked = LossAndGrads(meth, () =>
            FinetuneObjective.CrossEntropy(m, meth.HiddenStates(m, batch.InputIds, batch.AttentionMask), batch.Labels, chunkRows: ChunkRows));
        Assert.True(FinetuneObjective.CountTargets(Examples()) > 2 * ChunkRows);
        Assert.Equal(full.Loss, chunked.Loss, 1e-5);
        SameGradients(full.Grads, chunked.Grads, atol: 1e-6, rtol: 1e-5, $"{model}/{method}");
        (meth as IDisposable)?.Dispose();
    }

    [Fact]
    public void TiedHead_FullFinetuning_TheEmbeddingGetsTheHeadAndTheLookupGradients()
    {
        // GPT-2's wte is both the token lookup and the head: the fused function's head gradient must add to the lookup's.
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Fixtures.Model("tiny-gpt2"), "full");
        using var _m = m; using var _f = (IDisposable)meth;
        using var batch = FinetuneTrainer.Collate(Examples(), 0);
        var head = m.HeadParameters().Single();
        Assert.Equal(Storage(((Gpt2LMHeadModel)m).transformer.wte.weight!), Storage(head));
        var chunked = LossAndGrads(meth, () => FinetuneObjective.CrossEntropy(m, meth.HiddenStates(m, batch.InputIds, batch.AttentionMask), batch.Labels, chunkRows: 2));
        // Head part alone: the same loss on detached hidden states.
        foreach (var (_, p) in meth.TrainableParameters) p.grad = null;
        var hidden = meth.HiddenStates(m, batch.InputIds, batch.AttentionMask).detach();
        FinetuneObjective.CrossEntropy(m, hidden, batch.Labels, chunkRows: 2).backward();
        var headOnly = head.grad!.clone();
        var total = chunked.Grads["transformer.wte.weight"];
        Assert.True(headOnly.abs().max().item<float>() > 0);
        Assert.True(total.sub(headOnly).abs().max().item<float>() > 0, "the lookup's gradient is missing from the tied weight");
        // And the sum equals the full-logits path's.
        var full = LossAndGrads(meth, () => FullLogitsCrossEntropy(meth.Logits(m, batch.InputIds, batch.AttentionMask), batch.Labels));
        Assert.True(Fixtures.MaxAbsDiff(full.Grads["transformer.wte.weight"], total) < 1e-6);
    }

    static IntPtr Storage(Tensor t) => t.storage<float>().data_ptr();

    [Theory]
    [InlineData("tiny-llama", "lora")]
    [InlineData("tiny-llama", "full")]
    [InlineData("tiny-gemma2", "prefix")]
    public void Bf16Model_ChunkedCrossEntropy_MatchesFullLogitsAtBf16Precision(string model, string method)
    {
        // Same ops per row in bf16 (float32 logits and loss); only GEMM blocking and, for full finetuning, the float32
        // sum of the head's chunk gradients differ, so agreement is at bf16's rounding (2⁻⁸ relative), not 1e-5.
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Folder(model), method, ScalarType.BFloat16);
        using var _m = m;
        using var batch = FinetuneTrainer.Collate(Examples(), 0);
        var full = LossAndGrads(meth, () => FullLogitsCrossEntropy(meth.Logits(m, batch.InputIds, batch.AttentionMask), batch.Labels));
        var chunked = LossAndGrads(meth, () => FinetuneObjective.CrossEntropy(m, meth.HiddenStates(m, batch.InputIds, batch.AttentionMask), batch.Labels, chunkRows: ChunkRows));
        Assert.Equal(full.Loss, chunked.Loss, 1e-4);
        SameGradients(full.Grads, chunked.Grads, atol: 1e-5, rtol: 2e-2, $"bf16 {model}/{method}");
        (meth as IDisposable)?.Dispose();
    }

    [Theory]
    [InlineData("tiny-gemma2", "lora")]
    [InlineData("tiny-llama", "lora-head")]
    [InlineData("tiny-gpt2", "prompt")]
    public void ScoringAndValidation_UseTheChunkedHead_AndEqualFullLogitsLogProbs(string model, string method)
    {
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Folder(model), method);
        using var _m = m;
        using var _ = no_grad();
        using var batch = FinetuneTrainer.Collate(Examples(), 0);
        var (lpFull, maskFull) = FinetuneObjective.TargetLogProbs(meth.Logits(m, batch.InputIds, batch.AttentionMask), batch.Labels);
        var (lp, mask) = FinetuneObjective.TargetLogProbs(m, meth.HiddenStates(m, batch.InputIds, batch.AttentionMask), batch.Labels, chunkRows: 2);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(mask, maskFull));
        Assert.True(Fixtures.MaxAbsDiff(lp, lpFull) < 1e-5);
        Assert.Equal(FinetuneObjective.CountTargets(Examples()), (long)mask.sum().item<float>());
        // Written out: log p of each target from the full logits.
        var logits = meth.Logits(m, batch.InputIds, batch.AttentionMask).log_softmax(-1);
        for (int b = 0; b < batch.Labels.shape[0]; b++)
            for (int t = 1; t < batch.Labels.shape[1]; t++)
            {
                long y = batch.Labels[b, t].item<long>();
                double expected = y == -100 ? 0 : logits[b, t - 1, y].item<float>();
                Assert.Equal(expected, lp[b, t - 1].item<float>(), 1e-5);
            }
        // The trainer's validation loss is the mean −log p over the same targets.
        var trainer = new FinetuneTrainer(new TrainerOptions { BatchSize = 2, LogitsChunkRows = 2 }, padId: 0);
        double val = trainer.ValidationLoss(m, meth, Examples());
        Assert.Equal(-lpFull.sum().item<float>() / maskFull.sum().item<float>(), val, 1e-5);
        (meth as IDisposable)?.Dispose();
    }

    [Fact]
    public void NoTrainedTensorInTheHead_RunsWithoutGraph_AndAllChunkSizesAgree()
    {
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Fixtures.Model("tiny-qwen2"), "lora");
        using var _m = m;
        using var batch = FinetuneTrainer.Collate(Examples(), 0);
        var hidden = meth.HiddenStates(m, batch.InputIds, batch.AttentionMask).detach(); // nothing upstream trains
        var loss = FinetuneObjective.CrossEntropy(m, hidden, batch.Labels, chunkRows: 4);
        Assert.False(loss.requires_grad);
        double reference = loss.item<float>();
        foreach (long rows in new long[] { 1, 2, 5, 1000 })
            Assert.Equal(reference, FinetuneObjective.CrossEntropy(m, hidden, batch.Labels, chunkRows: rows).item<float>(), 1e-5);
        Assert.Equal(reference, FinetuneObjective.CrossEntropy(m, hidden, batch.Labels).item<float>(), 1e-5);
        Assert.Throws<ArgumentOutOfRangeException>(() => FinetuneObjective.CrossEntropy(m, hidden, batch.Labels, chunkRows: 0));
    }
}
