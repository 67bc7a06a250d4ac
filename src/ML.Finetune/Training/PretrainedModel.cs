using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

/// <summary>How the KL penalty obtains p_θp on the reference texts.</summary>
public enum KlReferenceMode
{
    /// <summary>
    /// Exact, computed from θ_p at every use (one no-grad forward per reference batch): LoRA, prompt and prefix disable
    /// their adapter for it; full finetuning runs a frozen copy that shares the θ_p weights it keeps anyway. Memory does
    /// not depend on the number of reference texts.
    /// </summary>
    OnTheFly = 0,
    /// <summary>
    /// A cache of the k largest log p_θp and the log of the remaining mass at every reference position, computed before
    /// the first step ((8k + 4) bytes per position; k = <c>KlTopK</c>): no reference forward of θ_p during training, and
    /// the KL becomes the top-k approximation <see cref="FinetuneObjective.KlRowsTopK"/> (never above the exact KL).
    /// </summary>
    TopKCache = 1,
}

/// <summary>
/// θ_p as a model the KL term can run, without a second copy of the weights where possible: the training model with
/// the method's adapter disabled (<see cref="IFinetuneMethod.UsePretrained"/>), or, for a method that changes the base
/// weights, its frozen copy (<see cref="IFinetuneMethod.PretrainedCopy"/>). Both run in eval mode (no dropout) and
/// without gradients.
/// </summary>
public sealed class PretrainedModel
{
    readonly CausalLM _model;
    readonly IFinetuneMethod? _method; // null: _model is a frozen copy of θ_p

    PretrainedModel(CausalLM model, IFinetuneMethod? method) { _model = model; _method = method; }

    /// <summary>θ_p for <paramref name="method"/> attached to <paramref name="model"/>.</summary>
    public static PretrainedModel For(IFinetuneMethod method, CausalLM model)
    {
        using (var probe = method.UsePretrained(model))
            if (probe is not null) return new PretrainedModel(model, method);
        return new PretrainedModel(method.PretrainedCopy(model), null);
    }

    /// <summary>Final hidden states [B, T, d] of θ_p (no grad, eval mode).</summary>
    public Tensor HiddenStates(Tensor inputIds, Tensor attentionMask)
    {
        using var _ = torch.no_grad();
        bool training = _model.training;
        if (training) _model.eval();
        try
        {
            if (_method is null) return _model.ForwardHidden(new CausalLMInput { InputIds = inputIds, AttentionMask = attentionMask }).LastHiddenState;
            using var scope = _method.UsePretrained(_model);
            return _method.HiddenStates(_model, inputIds, attentionMask);
        }
        finally { if (training) _model.train(); }
    }

    /// <summary>log p_θp [n, V] (float32) from θ_p's hidden rows [n, d] (no grad, eval mode).</summary>
    public Tensor LogProbs(Tensor hiddenRows)
    {
        using var _ = torch.no_grad();
        bool training = _model.training;
        if (training) _model.eval();
        try
        {
            using var scope = _method?.UsePretrained(_model);
            return _model.LogitsFromHidden(hiddenRows).log_softmax(-1);
        }
        finally { if (training) _model.train(); }
    }

    /// <summary>log p_θp [B, T, V] for a whole batch (tests and small inputs; training never forms it).</summary>
    public Tensor FullLogProbs(Tensor inputIds, Tensor attentionMask) => LogProbs(HiddenStates(inputIds, attentionMask));
}

/// <summary>
/// The top-k cache of log p_θp at the valid positions of one reference batch (in row-major order of the mask):
/// the k largest log-probabilities [N, k] (float32), their token ids [N, k] (int32) and the log of the remaining mass
/// [N] (float32). Memory: N·(8k + 4) bytes, against N·V·4 for the full distribution.
/// </summary>
public sealed class TopKLogProbs : IDisposable
{
    public TopKLogProbs(Tensor logProbs, Tensor indices, Tensor restLogProb)
    {
        LogProbs = logProbs; Indices = indices; RestLogProb = restLogProb;
    }

    public Tensor LogProbs { get; }
    public Tensor Indices { get; }
    public Tensor RestLogProb { get; }
    public long Rows => LogProbs.shape[0];
    public long K => LogProbs.shape[1];
    public long Bytes => LogProbs.NumberOfElements * 4 + Indices.NumberOfElements * 4 + RestLogProb.NumberOfElements * 4;

    /// <summary>
    /// Uninitialised caches for batches of these position counts, as views of one block per tensor, made before any
    /// is filled: the long-lived cache then never lands between the large chunk temporaries of <see cref="Fill"/>
    /// (with glibc's mmap disabled for training, such interleaving fragments the heap by a logits chunk per batch).
    /// The tensors are detached from every dispose scope; dispose each cache. k is capped at V − 1 so that the rest
    /// bucket is never empty.
    /// </summary>
    public static TopKLogProbs[] Allocate(IReadOnlyList<long> rows, int k, long vocabularySize, Device? device = null)
    {
        if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), "KlTopK must be ≥ 1.");
        long kk = Math.Min(k, vocabularySize - 1), total = rows.Sum();
        using var values = torch.empty(total, kk, dtype: ScalarType.Float32, device: device);
        using var indices = torch.empty(total, kk, dtype: ScalarType.Int32, device: device);
        using var rest = torch.empty(total, dtype: ScalarType.Float32, device: device);
        var caches = new TopKLogProbs[rows.Count];
        long offset = 0;
        for (int i = 0; i < rows.Count; i++)
        {
            caches[i] = new TopKLogProbs(values.narrow(0, offset, rows[i]).DetachFromDisposeScope(), indices.narrow(0, offset, rows[i]).DetachFromDisposeScope(),
                rest.narrow(0, offset, rows[i]).DetachFromDisposeScope());
            offset += rows[i];
        }
        return caches; // the views keep the blocks' storage alive; the block handles go now
    }

    /// <summary>
    /// Fills the cache from θ_p for its reference batch: one no-grad forward, then the head a chunk of positions at a
    /// time (no [N, V] tensor).
    /// </summary>
    public TopKLogProbs Fill(CausalLM model, PretrainedModel pretrained, Tensor inputIds, Tensor attentionMask, long? chunkRows = null)
    {
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var at = attentionMask.reshape(-1).ne(0).nonzero().squeeze(1);
        if (at.shape[0] != Rows) throw new ArgumentException($"the cache has {Rows} rows, the reference batch {at.shape[0]} valid positions");
        var hidden = pretrained.HiddenStates(inputIds, attentionMask);
        var rows = hidden.reshape(-1, hidden.shape[^1]).index_select(0, at);
        long n = rows.shape[0], chunk = ChunkedHead.RowsPerChunk(model, chunkRows);
        for (long s = 0; s < n; s += chunk)
        {
            using var inner = torch.NewDisposeScope();
            long c = Math.Min(chunk, n - s);
            var lp = pretrained.LogProbs(rows.narrow(0, s, c)).to_type(ScalarType.Float32);
            var (top, idx) = lp.topk((int)K, -1);
            LogProbs.narrow(0, s, c).copy_(top);
            Indices.narrow(0, s, c).copy_(idx);
            // log of the mass outside the top k, from the log-probs themselves (1 − Σ top would cancel catastrophically).
            RestLogProb.narrow(0, s, c).copy_(lp.scatter(-1, idx, torch.full_like(idx, double.NegativeInfinity, dtype: lp.dtype)).logsumexp(-1));
        }
        return this;
    }

    /// <summary>The cache of one reference batch (<see cref="Allocate"/> for one, then <see cref="Fill"/>).</summary>
    public static TopKLogProbs Compute(CausalLM model, PretrainedModel pretrained, Tensor inputIds, Tensor attentionMask, int k, long? chunkRows = null)
    {
        long rows = attentionMask.ne(0).sum().item<long>();
        var cache = Allocate([rows], k, model.Config.VocabSize, inputIds.device)[0];
        try { return cache.Fill(model, pretrained, inputIds, attentionMask, chunkRows); }
        catch { cache.Dispose(); throw; }
    }

    public void Dispose() { LogProbs.Dispose(); Indices.Dispose(); RestLogProb.Dispose(); }
}
