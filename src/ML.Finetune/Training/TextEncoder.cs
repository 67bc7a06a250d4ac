using ML.Finetune.Tokenization;

namespace ML.Finetune.Training;

/// <summary>
/// Plain text for continued pretraining: every token is trained. A text is encoded as Hugging Face encodes it with
/// <c>add_special_tokens=True</c> (the tokenizer's post-processor adds bos where the model expects one: Llama yes,
/// GPT-2 and Qwen no) and ends with eos, appended when the post-processor did not write one: TRL's SFTTrainer does the
/// same for language-modelling data, so that the model learns where a document ends.
/// <para>A text longer than <see cref="MaxSequenceLength"/> is not cut but split into windows of that length that
/// overlap by one token: window k starts with the last token of window k−1, which serves as context only (position 0
/// of a window is never a target), so every token after the first is a target exactly once. This is LitGPT's and
/// Megatron's chunking of a token stream, without losing a target at each window boundary.</para>
/// </summary>
public sealed class TextEncoder
{
    public TextEncoder(CausalLMTokenizer tokenizer, int maxSequenceLength)
    {
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        if (maxSequenceLength < 2) throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), "MaxSequenceLength must be at least 2.");
        MaxSequenceLength = maxSequenceLength;
        EosId = tokenizer.EosId ?? throw new InvalidOperationException("The tokenizer defines no eos token; plain-text training ends every text with one.");
    }

    public CausalLMTokenizer Tokenizer { get; }
    public int MaxSequenceLength { get; }
    public int EosId { get; }

    /// <summary>The text's ids with the post-processor's special tokens and a final eos.</summary>
    public long[] Ids(string text)
    {
        var ids = Tokenizer.EncodeToIds(text ?? "", addSpecialTokens: true).Select(i => (long)i).ToList();
        if (ids.Count == 0 || ids[^1] != EosId) ids.Add(EosId);
        return ids.ToArray();
    }

    /// <summary>The training examples of one text: one, or several overlapping windows when it is longer than the maximum.</summary>
    public IReadOnlyList<EncodedExample> Encode(string text) => Windows(Ids(text), MaxSequenceLength);

    /// <summary>Windows of at most <paramref name="length"/> tokens with stride length − 1 (see the class remarks), every token a label.</summary>
    public static IReadOnlyList<EncodedExample> Windows(long[] ids, int length)
    {
        var list = new List<EncodedExample>();
        if (ids.Length < 2) return list; // nothing to predict
        for (int start = 0; ; start += length - 1)
        {
            int n = Math.Min(length, ids.Length - start);
            var w = ids.AsSpan(start, n).ToArray();
            list.Add(new EncodedExample(w, (long[])w.Clone()));
            if (start + n >= ids.Length) break;
        }
        return list;
    }
}
