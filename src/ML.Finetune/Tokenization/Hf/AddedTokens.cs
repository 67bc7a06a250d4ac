using System.Buffers;
using System.Globalization;
using System.Text;

namespace ML.Finetune.Tokenization;

/// <summary>
/// A token matched whole in the text before the model runs (HF's AddedToken). <see cref="Special"/> tokens are
/// control tokens: skipped by <c>Decode(skipSpecialTokens: true)</c> and kept as text by split_special_tokens.
/// <see cref="LStrip"/>/<see cref="RStrip"/> absorb the whitespace on that side, <see cref="SingleWord"/> matches only
/// between non-word characters, and <see cref="Normalized"/> tokens are matched in the normalized text.
/// </summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord = false, bool LStrip = false,
    bool RStrip = false, bool? NormalizedOrDefault = null)
{
    /// <summary>HF's default: special tokens are matched in the raw text, others in the normalized text.</summary>
    public bool Normalized => NormalizedOrDefault ?? !Special;
}

/// <summary>
/// Finds added tokens in text as HF's AddedVocabulary does: leftmost-longest matches (each match consumes its span,
/// also when it is then discarded), single_word and lstrip/rstrip applied to each match.
/// </summary>
internal sealed class AddedTokenMatcher
{
    private readonly Dictionary<char, (AddedToken Token, string Text)[]> _byFirstChar = new();
    private readonly SearchValues<char> _firstChars;

    /// <param name="tokens">Tokens matched by this matcher.</param>
    /// <param name="contentOf">The string to look for (the normalized form for normalized tokens).</param>
    public AddedTokenMatcher(IEnumerable<AddedToken> tokens, Func<AddedToken, string> contentOf)
    {
        foreach (var g in tokens.Select(t => (Token: t, Text: contentOf(t))).Where(x => x.Text.Length > 0).GroupBy(x => x.Text[0]))
            _byFirstChar[g.Key] = g.OrderByDescending(x => x.Text.Length).ToArray();
        _firstChars = SearchValues.Create(_byFirstChar.Keys.ToArray());
    }
    public bool IsEmpty => _byFirstChar.Count == 0;

    /// <summary>Appends (start, end, token) for each match; text between matches is left to the caller.</summary>
    public void Find(string s, bool skipSpecial, List<(int Start, int End, AddedToken Token)> output)
    {
        int pos = 0, startOffset = 0;
        while (pos < s.Length)
        {
            int at = s.AsSpan(pos).IndexOfAny(_firstChars);
            if (at < 0) break;
            at += pos;
            AddedToken? hit = null;
            int stop = 0;
            foreach (var (t, text) in _byFirstChar[s[at]])
                if (s.AsSpan(at).StartsWith(text, StringComparison.Ordinal)) { hit = t; stop = at + text.Length; break; }
            if (hit is null) { pos = at + 1; continue; }
            int start = at;
            pos = stop; // the match is consumed whether or not it is kept
            if (skipSpecial && hit.Special) continue;
            if (hit.SingleWord && !((start == 0 || !IsWordChar(s, start, before: true)) && (stop == s.Length || !IsWordChar(s, stop, before: false))))
                continue;
            if (hit.LStrip)
            {
                int ns = start;
                while (ns > 0 && IsWhiteSpaceBefore(s, ns, out int w)) ns -= w;
                start = Math.Max(ns, startOffset);
            }
            if (hit.RStrip)
                while (stop < s.Length && IsWhiteSpaceAt(s, stop, out int w)) stop += w;
            output.Add((start, stop, hit));
            startOffset = stop;
            pos = stop;
        }
    }

    private static bool IsWhiteSpaceAt(string s, int i, out int width)
    {
        Rune.DecodeFromUtf16(s.AsSpan(i), out var r, out width);
        return Rune.IsWhiteSpace(r);
    }

    private static bool IsWhiteSpaceBefore(string s, int i, out int width)
    {
        Rune.DecodeLastFromUtf16(s.AsSpan(0, i), out var r, out width);
        return Rune.IsWhiteSpace(r);
    }

    private static bool IsWordChar(string s, int i, bool before)
    {
        Rune r;
        if (before) Rune.DecodeLastFromUtf16(s.AsSpan(0, i), out r, out _);
        else Rune.DecodeFromUtf16(s.AsSpan(i), out r, out _);
        return UnicodeText.IsWordChar(r);
    }
}

/// <summary>Unicode character classes as Rust's regex and char functions define them.</summary>
internal static class UnicodeText
{
    /// <summary>Rust regex's <c>\w</c>: alphabetic, marks, decimal digits, connector punctuation, joiners.</summary>
    public static bool IsWordChar(Rune r)
    {
        switch (Rune.GetUnicodeCategory(r))
        {
            case UnicodeCategory.UppercaseLetter: case UnicodeCategory.LowercaseLetter: case UnicodeCategory.TitlecaseLetter:
            case UnicodeCategory.ModifierLetter: case UnicodeCategory.OtherLetter: case UnicodeCategory.LetterNumber:
            case UnicodeCategory.NonSpacingMark: case UnicodeCategory.SpacingCombiningMark: case UnicodeCategory.EnclosingMark:
            case UnicodeCategory.DecimalDigitNumber: case UnicodeCategory.ConnectorPunctuation:
                return true;
            default:
                // Join_Control, and the circled letters that are Other_Alphabetic.
                return r.Value is 0x200C or 0x200D || r.Value is >= 0x24B6 and <= 0x24E9;
        }
    }
}
