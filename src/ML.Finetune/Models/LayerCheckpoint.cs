using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>
/// How a decoder layer runs inside the model's layer loop (<see cref="CausalLM.RunLayer"/>).
/// <list type="bullet">
/// <item>Plain: in a dispose scope of its own, so that the layer's intermediate tensors that autograd does not keep
///   are freed when the layer returns rather than at the end of the training step (TorchSharp's per-step scope would
///   otherwise hold every intermediate of the whole forward).</item>
/// <item>With <see cref="CausalLM.GradientCheckpointing"/>, while gradients are recorded: through an autograd function
///   that runs the layer without a graph, keeps only the layer's input (and, under prefix tuning, the layer's cached
///   prefix keys and values), and in the backward runs the layer again with a graph and backpropagates through it.
///   The CPU random state is saved before the forward and restored for the recomputation, so dropout draws the same
///   masks (and the stream continues as without checkpointing). Gradients equal the plain path's.</item>
/// </list>
/// Every tensor that requires grad and reaches the layer must be an argument of the function: the input, the
/// layer's own parameters (LoRA adapters are submodules) and the cached keys/values; masks and rotary tables are
/// constants.
/// </summary>
public static class LayerCheckpoint
{
    [ThreadStatic] static long _recomputed;

    /// <summary>Layers recomputed by backward passes on this thread so far (the CPU autograd engine runs the backward
    /// on the thread that calls it): a diagnostic that checkpointing took effect.</summary>
    public static long RecomputedOnThisThread => _recomputed;

    /// <summary>Runs <paramref name="forward"/>(h, cache) for layer <paramref name="index"/> of <paramref name="model"/>.</summary>
    public static Tensor Run(CausalLM model, nn.Module layer, int index, Tensor h, KVCache? cache, Func<Tensor, KVCache?, Tensor> forward)
    {
        if (model.GradientCheckpointing && torch.is_grad_enabled())
        {
            var trained = layer.parameters().Where(p => p.requires_grad).Cast<Tensor>().ToArray();
            // The layer's cache entries before this forward appends to them (aliases: Append disposes what it replaces).
            Tensor? keys = cache?.Keys(index)?.alias(), values = cache?.Values(index)?.alias();
            if (h.requires_grad || trained.Length > 0 || keys is { requires_grad: true } || values is { requires_grad: true })
            {
                var state = new Checkpointed.State(forward, h, keys, values, trained, cache, index, model.Config.NumLayers,
                    cache is null ? null : model.CacheWindows, model.training ? torch.get_rng_state().DetachFromDisposeScope() : null);
                var args = new object?[trained.Length + 4];
                args[0] = h; args[1] = keys; args[2] = values;
                for (int i = 0; i < trained.Length; i++) args[i + 3] = trained[i];
                args[^1] = state;
                return Checkpointed.apply(args!)[0];
            }
        }
        using var scope = torch.NewDisposeScope();
        return forward(h, cache).MoveToOuterDisposeScope();
    }

    sealed class Checkpointed : torch.autograd.MultiTensorFunction<Checkpointed>
    {
        public sealed record State(Func<Tensor, KVCache?, Tensor> Forward, Tensor Input, Tensor? Keys, Tensor? Values, Tensor[] Parameters,
            KVCache? Cache, int Layer, int NumLayers, IReadOnlyList<int?>? Windows, Tensor? RngState);

        public override string Name => "LayerCheckpoint";

        public override List<Tensor> forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            var state = (State)vars[^1];
            ctx.save_data("state", state);
            using var scope = torch.NewDisposeScope();
            // The real cache (when there is one) is appended to as without checkpointing.
            return [state.Forward(state.Input, state.Cache).MoveToOuterDisposeScope()];
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var state = (State)ctx.get_data("state");
            Tensor? now = null;
            if (state.RngState is not null) { now = torch.get_rng_state(); torch.set_rng_state(state.RngState); }
            var grads = new Tensor?[3];
            List<Tensor> parameterGrads;
            try
            {
                using var scope = torch.NewDisposeScope();
                using var grad = torch.enable_grad();
                Tensor? Leaf(Tensor? t) => t?.detach().requires_grad_(t.requires_grad);
                var x = Leaf(state.Input)!;
                Tensor? k = Leaf(state.Keys), v = Leaf(state.Values);
                // A cache holding only this layer's entries as they were before the forward: the layer appends to it again.
                using var cache = state.Cache is null ? null : KVCache.ForLayer(state.NumLayers, state.Layer, k, v, state.Windows);
                var y = state.Forward(x, cache);
                _recomputed++;
                var inputs = new[] { x, k, v }.Where(t => t is { requires_grad: true }).Cast<Tensor>().Concat(state.Parameters).ToList();
                var result = torch.autograd.grad([y], inputs, [gradOutputs[0]], allow_unused: true)
                    .Select(g => g.IsInvalid ? null : g.MoveToOuterDisposeScope()).ToList();
                int n = 0;
                var leaves = new[] { x, k, v };
                for (int i = 0; i < 3; i++) if (leaves[i] is { requires_grad: true }) grads[i] = result[n++];
                parameterGrads = result.Skip(n).ToList()!;
            }
            finally
            {
                if (now is not null) { torch.set_rng_state(now); now.Dispose(); }
            }
            state.RngState?.Dispose();
            var list = new List<Tensor>(grads!);
            list.AddRange(parameterGrads);
            list.Add(null!); // the state argument
            return list;
        }
    }
}
