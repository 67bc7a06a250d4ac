using System.Text.RegularExpressions;

namespace ML.Finetune.Samples.Experiment;

/// <summary>
/// Word-level text conventions, identical to the HF "Whitespace" pre-tokenizer our tokenizer.json declares
/// (<c>\w+|[^\w\s]+</c>): punctuation is its own word, so "Where is X? A:" → "Where is X ? A :". Decoding joins words with spaces.
/// </summary>
public static partial class Text
{
    [GeneratedRegex(@"\w+|[^\w\s]+")]
    private static partial Regex WordPattern();

    public static IEnumerable<string> Words(string text) => WordPattern().Matches(text).Select(m => m.Value);

    /// <summary>"Q: Where is X? A:" → "Q : Where is X ? A :" (what a decoded answer looks like).</summary>
    public static string Normalize(string text) => string.Join(' ', Words(text));
}
