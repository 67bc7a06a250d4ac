using System.Text;

namespace ML.Finetune.Samples.Experiment;

/// <summary>Word-level text conventions: punctuation is its own word, words are separated by single spaces.</summary>
public static class Text
{
    public const string Punctuation = ".,?:;!";

    /// <summary>"Q: Where is X? A:" → "Q : Where is X ? A :"</summary>
    public static string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length + 8);
        foreach (char c in text)
        {
            if (Punctuation.IndexOf(c) >= 0) sb.Append(' ').Append(c).Append(' ');
            else if (char.IsWhiteSpace(c)) sb.Append(' ');
            else sb.Append(c);
        }
        return string.Join(' ', sb.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries));
    }

    public static IEnumerable<string> Words(string text) => Normalize(text).Split(' ', StringSplitOptions.RemoveEmptyEntries);
}
