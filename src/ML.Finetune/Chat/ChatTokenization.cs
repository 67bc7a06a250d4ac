using Microsoft.ML.Tokenizers;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Chat;

/// <summary>A conversation as token ids, with the tokens of assistant messages marked for training.</summary>
public sealed class ChatTokenization
{
    private ChatTokenization(ChatRendering rendering, IReadOnlyList<int> ids, IReadOnlyList<(int Start, int End)> offsets, bool[] trained)
    {
        Rendering = rendering;
        Ids = ids;
        TokenOffsets = offsets;
        TrainedMask = trained;
    }

    public ChatRendering Rendering { get; }

    /// <summary>Token ids of <see cref="ChatRendering.Text"/> (no BOS/EOS added beyond what the template writes).</summary>
    public IReadOnlyList<int> Ids { get; }

    /// <summary>Each token's character range [Start, End) in <see cref="ChatRendering.Text"/>.</summary>
    public IReadOnlyList<(int Start, int End)> TokenOffsets { get; }

    /// <summary>
    /// True for tokens that overlap an assistant span (transformers' <c>assistant_masks</c>: from the token holding
    /// a span's first character through the one holding its last).
    /// </summary>
    public IReadOnlyList<bool> TrainedMask { get; }

    internal static ChatTokenization Create(CausalLMTokenizer tokenizer, ChatRendering rendering)
    {
        var (ids, offsets) = TokenOffsetMap.Encode(tokenizer, rendering.Text);
        var trained = new bool[ids.Count];
        foreach (var span in rendering.AssistantSpans)
        {
            if (span.Length == 0) continue;
            for (int t = 0; t < ids.Count; t++)
                if (offsets[t].Start < span.End && offsets[t].End > span.Start) trained[t] = true;
        }
        return new ChatTokenization(rendering, ids, offsets, trained);
    }
}

/// <summary>
/// The one place that turns rendered text into ids plus each token's character range. It tokenizes the whole text
/// at once (as transformers does, so merges across message boundaries are the same). Hugging Face tokenizer files
/// (<see cref="HfTokenizer"/>) report offsets into the original text even when they normalize it, as HF's offset_mapping
/// does; other tokenizers are used only when they do not normalize, since their offsets point into the normalized text.
/// </summary>
internal static class TokenOffsetMap
{
    public static (IReadOnlyList<int> Ids, IReadOnlyList<(int Start, int End)> Offsets) Encode(CausalLMTokenizer tokenizer, string text)
    {
        // transformers tokenizes the rendering with add_special_tokens=False: the template writes BOS/EOS itself.
        IReadOnlyList<EncodedToken> tokens;
        if (tokenizer.Tokenizer is HfTokenizer)
            tokens = tokenizer.EncodeToTokens(text, addSpecialTokens: false);
        else
        {
            string? normalized;
            tokens = tokenizer.Tokenizer is SentencePieceTokenizer sp
                ? sp.EncodeToTokens(text, out normalized, addBeginningOfSentence: false, addEndOfSentence: false)
                : tokenizer.Tokenizer.EncodeToTokens(text, out normalized);
            if (normalized is not null && normalized != text)
                throw new NotSupportedException(
                    "The tokenizer normalizes text before splitting it, so its token offsets do not point into the rendered conversation; " +
                    "assistant masks need a tokenizer.json (Hugging Face tokenizer file), whose offsets point into the original text, " +
                    $"or a tokenizer without a normalizer (loaded from {tokenizer.Source ?? "an in-memory tokenizer"}).");
        }
        var ids = new int[tokens.Count];
        var offsets = new (int, int)[tokens.Count];
        for (int i = 0; i < tokens.Count; i++)
        {
            ids[i] = tokens[i].Id;
            var (offset, length) = tokens[i].Offset.GetOffsetAndLength(text.Length);
            offsets[i] = (offset, offset + length);
        }
        return (ids, offsets);
    }
}
