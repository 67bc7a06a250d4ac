namespace ML.Finetune.Tokenization;

/// <summary>
/// What HF's post-processor adds to one encoded sequence with add_special_tokens=True: ids before and after it
/// (TemplateProcessing's single template, Roberta/Bert's cls/sep), and whether ByteLevel trims token offsets.
/// </summary>
internal sealed record PostProcessor(IReadOnlyList<int> Prefix, IReadOnlyList<int> Suffix, bool TrimOffsets = false, bool AddPrefixSpace = true)
{
    public static readonly PostProcessor None = new(Array.Empty<int>(), Array.Empty<int>());

    /// <summary>transformers' template from add_bos_token/add_eos_token: "[bos] $A [eos]".</summary>
    public static PostProcessor FromBosEos(int? bos, int? eos) =>
        new(bos is { } b ? new[] { b } : Array.Empty<int>(), eos is { } e ? new[] { e } : Array.Empty<int>());

    /// <summary>Chains two processors as HF's Sequence does (the next one wraps this one's output; offsets are trimmed if either trims).</summary>
    public PostProcessor Then(PostProcessor next) =>
        new(next.Prefix.Concat(Prefix).ToArray(), Suffix.Concat(next.Suffix).ToArray(), TrimOffsets || next.TrimOffsets,
            next.TrimOffsets ? next.AddPrefixSpace : AddPrefixSpace);
}
