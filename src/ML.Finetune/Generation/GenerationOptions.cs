using ML.Finetune.Models;
using static TorchSharp.torch;

namespace ML.Finetune.Generation;

/// <summary>Settings of <see cref="TextGenerator"/>. A record so that callers can derive variants with <c>with</c>.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 32;
    /// <summary>False = greedy (argmax).</summary>
    public bool DoSample { get; init; }
    public double Temperature { get; init; } = 1.0;
    /// <summary>0 = off.</summary>
    public int TopK { get; init; }
    /// <summary>1 = off.</summary>
    public double TopP { get; init; } = 1.0;
    public long Seed { get; init; } = 0;
    /// <summary>Generation stops for a row once it emits one of these. Null = the model config's eos ids.</summary>
    public IReadOnlyList<long>? EosTokenIds { get; init; }
    public long PadTokenId { get; init; }
    /// <summary>False recomputes the whole sequence each step (slow; used to test the cache path).</summary>
    public bool UseCache { get; init; } = true;
    /// <summary>Keep the raw logits [B, V] that chose each token (for tests and diagnostics).</summary>
    public bool OutputLogits { get; init; }
    /// <summary>
    /// Builds a pre-filled cache for a batch size (prefix tuning). Its length P is prepended to the attention
    /// mask and added to the positions, as peft does.
    /// </summary>
    public Func<int, KVCache>? PrefixCache { get; init; }
    /// <summary>
    /// Soft prompt [k, d] (prompt tuning), prepended to every row's token embeddings in front of its left padding, as
    /// peft does: the mask gets k leading ones (after a <see cref="PrefixCache"/>'s P), the soft prompt takes positions
    /// P..P+k-1 and real tokens start at P+k.
    /// </summary>
    public Tensor? SoftPrompt { get; init; }
}

public sealed class GenerationResult
{
    /// <summary>New tokens per row, without padding, including the eos token when one was produced.</summary>
    public required long[][] NewTokens { get; init; }
    /// <summary>Per step [B, V] float32 logits when <see cref="GenerationOptions.OutputLogits"/> is set (caller disposes).</summary>
    public IReadOnlyList<Tensor>? StepLogits { get; init; }
}
