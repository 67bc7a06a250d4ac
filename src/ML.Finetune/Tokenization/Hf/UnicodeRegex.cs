using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace ML.Finetune.Tokenization;

/// <summary>
/// A tokenizer.json regex (written for Oniguruma, which matches over Unicode scalar values) run with .NET's
/// <see cref="Regex"/>, which matches UTF-16 code units: there a surrogate pair is two non-letters, so <c>\p{L}</c>
/// misses 𝐀 and 𠀀. Before matching, each supplementary character is replaced by one BMP character of the same
/// Unicode category that the pattern does not name, and match positions are mapped back. Patterns that name
/// supplementary characters themselves are refused.
/// </summary>
internal sealed class UnicodeRegex
{
    private readonly Regex _regex;
    private readonly char[] _representative; // per UnicodeCategory

    public UnicodeRegex(string pattern, string where)
    {
        Pattern = pattern;
        foreach (char c in pattern)
            if (char.IsSurrogate(c))
                throw new NotSupportedException($"{where}: the regex names a character outside the Basic Multilingual Plane, which is not supported.");
        if (pattern.Contains(@"\x{", StringComparison.Ordinal))
            throw new NotSupportedException($"{where}: the regex uses \\x{{...}} code points, which are not supported.");
        try
        {
            // Oniguruma's (Ruby syntax) ^ and $ are line anchors, as .NET's are with Multiline.
            _regex = new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant | RegexOptions.Multiline);
        }
        catch (ArgumentException ex)
        {
            throw new NotSupportedException($"{where}: the regex '{pattern}' is not supported by .NET's Regex ({ex.Message}).", ex);
        }
        _representative = PickRepresentatives(pattern);
    }

    public string Pattern { get; }

    /// <summary>Appends the [start, end) of every match in <paramref name="text"/>, left to right.</summary>
    public void Matches(string text, List<(int Start, int End)> output)
    {
        int firstSurrogate = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (firstSurrogate < 0)
        {
            foreach (var m in _regex.EnumerateMatches(text)) output.Add((m.Index, m.Index + m.Length));
            return;
        }
        // One char per code point; map[i] = index in text of the code point at i (map[^1] = text.Length).
        var sb = new StringBuilder(text.Length);
        var map = new int[text.Length + 1];
        int n = 0;
        for (int i = 0; i < text.Length;)
        {
            map[n++] = i;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                var cat = CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1]));
                sb.Append(_representative[(int)cat]);
                i += 2;
            }
            else { sb.Append(text[i]); i++; }
        }
        map[n] = text.Length;
        foreach (var m in _regex.EnumerateMatches(sb.ToString())) output.Add((map[m.Index], map[m.Index + m.Length]));
    }

    /// <summary>For each category, the first BMP character of it (from U+00A1) that the pattern does not name in any case.</summary>
    private static char[] PickRepresentatives(string pattern)
    {
        var reps = new char[32];
        for (int c = 0xA1; c <= 0xFFFD; c++)
        {
            char ch = (char)c;
            if (char.IsSurrogate(ch)) continue;
            int cat = (int)char.GetUnicodeCategory(ch);
            if (reps[cat] != '\0') continue;
            if (pattern.Contains(ch) || pattern.Contains(char.ToUpperInvariant(ch)) || pattern.Contains(char.ToLowerInvariant(ch))) continue;
            reps[cat] = ch;
        }
        return reps;
    }
}
