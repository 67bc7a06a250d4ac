using ML.Finetune.Models;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Training;

/// <summary>
/// One tokenized training example: ids and labels (−100 where nothing is trained, e.g. prompt positions; label j is the
/// target predicted from position j − 1). A packed row (<see cref="SequencePacker"/>) holds several examples one after
/// the other; <see cref="SequenceLengths"/> then gives their lengths, and collation gives each its own positions and
/// attention block.
/// </summary>
public sealed record EncodedExample(long[] InputIds, long[] Labels)
{
    public int Length => InputIds.Length;
    public int PromptLength => Labels.TakeWhile(l => l == FinetuneObjective.IgnoreIndex).Count();

    /// <summary>Lengths of the packed sequences in this row, in order, summing to <see cref="Length"/>; null = one sequence.</summary>
    public int[]? SequenceLengths { get; init; }

    /// <summary>Whether this row holds several packed sequences.</summary>
    public bool IsPacked => SequenceLengths is { Length: > 1 };
}

/// <summary>
/// Tokenizes training pairs. Truncation policy: when prompt + completion + eos exceeds <see cref="MaxSequenceLength"/>,
/// the PROMPT is truncated from the left (a leading BOS is kept); the completion y is never cut: if completion + eos
/// does not fit next to at least one prompt token, <see cref="Encode"/> throws an ArgumentException naming the row and column.
/// </summary>
public sealed class ExampleEncoder
{
    public ExampleEncoder(CausalLMTokenizer tokenizer, int maxSequenceLength)
    {
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        if (maxSequenceLength < 2) throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), "MaxSequenceLength must be at least 2.");
        MaxSequenceLength = maxSequenceLength;
        EosId = tokenizer.EosId ?? throw new InvalidOperationException("The tokenizer defines no eos token; finetuning needs one to end completions.");
        PadId = tokenizer.PadId ?? EosId;
    }

    public CausalLMTokenizer Tokenizer { get; }
    public int MaxSequenceLength { get; }
    public int EosId { get; }
    /// <summary>Pad id of batches (the tokenizer's pad, else eos). Pads are masked and labelled −100, so its value does not matter.</summary>
    public int PadId { get; }

    /// <summary>Prompt ids (BOS when the tokenizer adds one), left-truncated to <paramref name="maxLength"/>.</summary>
    public long[] EncodePrompt(string prompt, int? maxLength = null)
    {
        var ids = Tokenizer.Encode(prompt ?? "").Select(i => (long)i).ToList();
        int max = maxLength ?? MaxSequenceLength;
        return LeftTruncate(ids, max).ToArray();
    }

    /// <summary>Completion ids (no BOS) followed by eos.</summary>
    public long[] EncodeCompletion(string completion)
    {
        var ids = Tokenizer.Tokenizer.EncodeToIds(completion ?? "").Select(i => (long)i).ToList();
        ids.Add(EosId);
        return ids.ToArray();
    }

    private List<long> LeftTruncate(List<long> ids, int max) => Generation.TextGenerator.TruncateLeft(ids, max, Tokenizer.BosId).ToList();

    /// <summary>
    /// MaxSequenceLength capped at the model's context (max_position_embeddings): GPT-2's learned positions end there,
    /// and RoPE models were never trained beyond it. A completion that does not fit the capped length is an error.
    /// </summary>
    public static int EffectiveMaxLength(int maxSequenceLength, CausalLMConfig config)
    {
        if (maxSequenceLength < 2) throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), "MaxSequenceLength must be ≥ 2.");
        return Math.Min(maxSequenceLength, config.MaxPositionEmbeddings);
    }

    /// <summary>Encodes one pair; <paramref name="row"/> is the 0-based row index (named 1-based in the error message), -1 when unknown.</summary>
    public EncodedExample Encode(string prompt, string completion, long row = -1, string completionColumn = "Completion")
    {
        var c = EncodeCompletion(completion);
        if (c.Length + 1 > MaxSequenceLength)
            throw new ArgumentException(
                (row >= 0 ? $"Row {row + 1} (counting from 1): column" : "Column") +
                $" '{completionColumn}' has {c.Length - 1} tokens (+ eos); with at least one prompt token that exceeds " +
                $"MaxSequenceLength {MaxSequenceLength} (at most the model's context). Completions are never truncated: " +
                "shorten the completion, or raise MaxSequenceLength if it is below the model's context.",
                completionColumn);
        var p = Tokenizer.Encode(prompt ?? "").Select(i => (long)i).ToList();
        if (p.Count == 0) p.Add(EosId); // something must condition the first completion token
        p = LeftTruncate(p, MaxSequenceLength - c.Length);
        var ids = p.Concat(c).ToArray();
        var labels = Enumerable.Repeat(FinetuneObjective.IgnoreIndex, p.Count).Concat(c).ToArray();
        return new EncodedExample(ids, labels);
    }
}
