using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

/// <summary>
/// The pluggable part of the single training loop (Training/FinetuneTrainer): which parameters train and how a batch
/// runs through the base model with them. Full finetuning, LoRA, prompt tuning and prefix tuning each implement it;
/// the loop, the objective (CE on completion tokens + β·L2 + λ·KL), checkpoints and persistence are shared.
/// </summary>
public interface IFinetuneMethod
{
    /// <summary>"full", "lora", "prompt" or "prefix": stored with saved models.</summary>
    string Name { get; }

    /// <summary>
    /// Prepares the loaded base model: freezes every base parameter the method does not train (requires_grad false)
    /// and attaches its adapters / creates its prefix parameters (deterministically from <paramref name="seed"/>).
    /// Called once, before TrainableParameters is read.
    /// </summary>
    void Attach(CausalLM model, long seed);

    /// <summary>The parameters the optimiser updates, with stable names (checkpoints, optimiser state, L2).</summary>
    IReadOnlyList<(string Name, Tensor Parameter)> TrainableParameters { get; }

    /// <summary>
    /// Final-norm hidden states [B, T, d] (compute dtype) for the real token positions of the batch, with the method in
    /// effect: virtual prompt positions are dropped, so rows align with <paramref name="inputIds"/>. Right-padded
    /// batches. The LM head (<see cref="CausalLM.LogitsFromHidden"/>) maps them to logits; keeping the two apart lets a
    /// loss run the head only where it is needed.
    /// <para>With <paramref name="packing"/> a row holds several sequences, and each is computed as if it were alone:
    /// its own positions from 0 and attention block, and the method's virtual tokens (soft prompt, KV prefix) in front
    /// of every sequence, at the positions they take in an unpacked row.</para>
    /// </summary>
    Tensor HiddenStates(CausalLM model, Tensor inputIds, Tensor attentionMask, SequencePacking? packing = null);

    /// <summary>
    /// The pretrained distribution p_θp for the KL penalty, with no second model copy where possible: methods that
    /// freeze the base disable their adapter/prefix for the duration and return a scope; full finetuning returns
    /// null, and the KL then runs <see cref="PretrainedCopy"/>.
    /// </summary>
    IDisposable? UsePretrained(CausalLM model);

    /// <summary>
    /// For a method whose <see cref="UsePretrained"/> is null (it changes the base weights): θ_p as a frozen model
    /// (no parameter requires grad, eval mode) of <paramref name="model"/>'s architecture, owned by the method.
    /// </summary>
    CausalLM PretrainedCopy(CausalLM model) =>
        throw new NotSupportedException($"method '{Name}' changes no base weight: use UsePretrained for θ_p");

    /// <summary>
    /// ‖θ − θ_p‖² as this method defines it (the quantity behind the reported distance and the L2 penalty):
    /// full = Σ(θ − θ_p)² over all trained weights (tied weights once); LoRA = Σ‖(α/r)·B·A‖²_F, the exact change of
    /// the model's weights; prompt/prefix = Σ(φ − φ₀)² over the learned prefix parameters (base weights never change).
    /// Differentiable.
    /// </summary>
    Tensor DistanceFromPretrainedSquared();

    /// <summary>What generation needs from the method: soft-prompt embeddings and/or a KV prefix. Null when nothing.</summary>
    GenerationPrefix? GetGenerationPrefix(CausalLM model);

    /// <summary>The tensors to persist (CPU, contiguous) and the method's config as JSON; enough for LoadState.</summary>
    (IReadOnlyDictionary<string, Tensor> Tensors, string ConfigJson) SaveState();

    /// <summary>Restores what SaveState wrote, after Attach. Throws InvalidDataException naming a missing/mismatched tensor.</summary>
    void LoadState(IReadOnlyDictionary<string, Tensor> tensors);
}

/// <summary>
/// Method-specific input for generation and scoring. SoftPrompt [k, d] is prepended to the token embeddings
/// (prompt tuning; positions of real tokens start at k, mask gets k ones). PrefixCache builds a KV cache pre-filled
/// with per-layer prefixes for a batch (prefix tuning; real tokens' positions start at the prefix length).
/// </summary>
public sealed record GenerationPrefix(Tensor? SoftPrompt, Func<int, KVCache>? PrefixCache);

public static class FinetuneMethodExtensions
{
    /// <summary>
    /// Logits [B, T, V] (float32) with the method in effect: the LM head on <see cref="IFinetuneMethod.HiddenStates"/>.
    /// For generation and inspection; the objective, validation and scoring run the head on the rows they need only.
    /// </summary>
    public static Tensor Logits(this IFinetuneMethod method, CausalLM model, Tensor inputIds, Tensor attentionMask, SequencePacking? packing = null) =>
        model.LogitsFromHidden(method.HiddenStates(model, inputIds, attentionMask, packing));
}
