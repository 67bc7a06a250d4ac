using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

/// <summary>
/// The LM head and a loss over selected rows of hidden states, a chunk of rows at a time, so that no logits tensor
/// larger than one chunk [rows, V] ever exists, in the forward or in the backward (the idea of Liger-Kernel's fused
/// linear cross-entropy). For each chunk the forward computes the logits with <see cref="CausalLM.LogitsFromHidden"/>
/// (the projection, a LoRA adapter on lm_head, Gemma 2's final softcap, float32 logits over a bf16 model), the chunk's
/// loss sum, and at once, while the chunk's logits exist, the gradients of that sum with respect to the chunk's hidden
/// rows and the head's trainable parameters. It keeps only those gradients ([N, d], and the head parameters' size when
/// they train); the backward scales them by the incoming gradient. Nothing is recomputed.
/// <para>The loss itself is the caller's (<see cref="RowLoss"/>): the objective's equations stay in
/// <see cref="FinetuneObjective"/>. Each hidden row's gradient comes from one chunk only, so it is exactly what one
/// [N, V] pass gives; parameter gradients are summed over chunks in float32 (float64 for a float64 head).</para>
/// </summary>
public static class ChunkedHead
{
    /// <summary>Logits elements per chunk when no row count is given: 2²⁵ float32 values (128 MiB), e.g. 220 rows of
    /// Qwen's 151,936-token vocabulary or 667 of GPT-2's 50,257. A chunk's softmax and gradient temporaries are a few
    /// times that.</summary>
    public const long DefaultChunkElements = 1L << 25;

    /// <summary>The sum of a loss over logits rows [start, start + count) of the selected rows (differentiable in <paramref name="logits"/>).</summary>
    public delegate Tensor RowLoss(Tensor logits, long start, long count);

    /// <summary>Rows per chunk: <paramref name="chunkRows"/>, or <see cref="DefaultChunkElements"/> / V.</summary>
    public static long RowsPerChunk(CausalLM model, long? chunkRows)
    {
        if (chunkRows is < 1) throw new ArgumentOutOfRangeException(nameof(chunkRows), "the logits chunk must have at least 1 row");
        return chunkRows ?? Math.Max(1, DefaultChunkElements / model.Config.VocabSize);
    }

    /// <summary>
    /// Σ over the chunks of <paramref name="loss"/>(logits of the chunk), a scalar (float32, float64 for a float64
    /// model). <paramref name="hiddenRows"/> [N, d] are final-norm hidden states in the compute dtype. Differentiable
    /// with respect to the rows and the head's parameters when grad mode is on and any of them requires grad.
    /// </summary>
    public static Tensor LossSum(CausalLM model, Tensor hiddenRows, RowLoss loss, long? chunkRows = null)
    {
        if (hiddenRows.dim() != 2) throw new ArgumentException($"hidden rows must be [N, d], got [{string.Join(",", hiddenRows.shape)}]", nameof(hiddenRows));
        long rows = RowsPerChunk(model, chunkRows);
        var trained = model.HeadParameters().Where(p => p.requires_grad).ToArray();
        if (!torch.is_grad_enabled() || (!hiddenRows.requires_grad && trained.Length == 0))
        {
            using var _ = torch.no_grad();
            Tensor? total = null;
            foreach (var (start, count) in Chunks(hiddenRows.shape[0], rows))
            {
                using var scope = torch.NewDisposeScope();
                var sum = loss(model.LogitsFromHidden(hiddenRows.narrow(0, start, count)), start, count);
                total = (total is null ? sum : total.add(sum)).MoveToOuterDisposeScope();
            }
            return total ?? torch.zeros(1, dtype: LossDType(model), device: hiddenRows.device).squeeze();
        }
        var args = new object[trained.Length + 2];
        args[0] = hiddenRows;
        for (int i = 0; i < trained.Length; i++) args[i + 1] = trained[i];
        args[^1] = new FusedHeadLoss.State(model, loss, rows);
        return FusedHeadLoss.apply(args)[0];
    }

    /// <summary>
    /// Applies <paramref name="perRow"/> to the logits of each chunk of rows, without gradients, and concatenates
    /// the per-row results ([N, ...]): scoring and evaluation through the same chunks as training.
    /// </summary>
    public static Tensor MapRows(CausalLM model, Tensor hiddenRows, RowLoss perRow, long? chunkRows = null)
    {
        using var _ = torch.no_grad();
        long rows = RowsPerChunk(model, chunkRows);
        var parts = new List<Tensor>();
        foreach (var (start, count) in Chunks(hiddenRows.shape[0], rows))
        {
            using var scope = torch.NewDisposeScope();
            parts.Add(perRow(model.LogitsFromHidden(hiddenRows.narrow(0, start, count)), start, count).MoveToOuterDisposeScope());
        }
        return parts.Count == 1 ? parts[0] : parts.Count == 0 ? torch.zeros(0, dtype: LossDType(model), device: hiddenRows.device) : torch.cat(parts, 0);
    }

    static ScalarType LossDType(CausalLM model) => model.ComputeDType == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;

    static IEnumerable<(long Start, long Count)> Chunks(long n, long rows)
    {
        for (long s = 0; s < n; s += rows) yield return (s, Math.Min(rows, n - s));
    }

    /// <summary>The autograd function: gradients computed chunk by chunk in the forward, scaled in the backward.</summary>
    sealed class FusedHeadLoss : torch.autograd.MultiTensorFunction<FusedHeadLoss>
    {
        public sealed record State(CausalLM Model, RowLoss Loss, long Rows)
        {
            public Tensor? HiddenGrad;
            public Tensor[] ParameterGrads = [];
            public ScalarType[] ParameterDTypes = [];
        }

        public override string Name => nameof(FusedHeadLoss);

        public override List<Tensor> forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            var hidden = (Tensor)vars[0];
            var state = (State)vars[^1];
            var parameters = vars[1..^1].Cast<Tensor>().ToArray();
            long n = hidden.shape[0];
            state.HiddenGrad = hidden.requires_grad ? torch.empty_like(hidden) : null;
            // Parameter gradients accumulate over chunks in float32 (a bf16 running sum would round at every chunk).
            state.ParameterGrads = parameters.Select(p => torch.zeros(p.shape, dtype: AccumulationDType(p.dtype), device: p.device)).ToArray();
            state.ParameterDTypes = parameters.Select(p => p.dtype).ToArray();
            Tensor total = torch.zeros(1, dtype: LossDType(state.Model), device: hidden.device).squeeze();
            foreach (var (start, count) in Chunks(n, state.Rows))
            {
                using var scope = torch.NewDisposeScope();
                using var grad = torch.enable_grad();
                var rows = hidden.narrow(0, start, count).detach().requires_grad_(state.HiddenGrad is not null);
                var sum = state.Loss(state.Model.LogitsFromHidden(rows), start, count);
                var inputs = (state.HiddenGrad is not null ? new[] { rows } : []).Concat(parameters).ToList();
                var grads = torch.autograd.grad([sum], inputs, allow_unused: true);
                int k = 0;
                if (state.HiddenGrad is not null) state.HiddenGrad.narrow(0, start, count).copy_(Defined(grads[k++]) ?? torch.zeros_like(rows));
                for (int i = 0; i < parameters.Length; i++, k++)
                    if (Defined(grads[k]) is Tensor g) state.ParameterGrads[i].add_(g);
                total.add_(sum.detach());
            }
            ctx.save_data("state", state);
            return [total];
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var state = (State)ctx.get_data("state");
            var g = gradOutputs[0];
            // g is a float32 0-dim tensor: a bf16 row gradient is scaled with g's float value (torch's scalar rule).
            var result = new List<Tensor> { state.HiddenGrad?.mul(g)! };
            for (int i = 0; i < state.ParameterGrads.Length; i++)
                result.Add(state.ParameterGrads[i].mul(g).to_type(state.ParameterDTypes[i]));
            result.Add(null!); // the state argument
            // What the forward kept is not needed again (a graph is backpropagated once).
            state.HiddenGrad?.Dispose();
            foreach (var pg in state.ParameterGrads) pg.Dispose();
            state.HiddenGrad = null; state.ParameterGrads = [];
            return result;
        }

        static Tensor? Defined(Tensor t) => t.IsInvalid ? null : t;

        static ScalarType AccumulationDType(ScalarType t) => t == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
    }
}
