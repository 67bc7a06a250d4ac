using System.Text;

namespace ML.Finetune.Tokenization;

/// <summary>One HF normalizer: rewrites a piece of text and keeps each char's original range.</summary>
internal abstract class HfNormalizer
{
    public abstract TextPiece Normalize(TextPiece piece);

    /// <summary>Normalizes a plain string (the normalized form of added tokens with normalized=true).</summary>
    public string Normalize(string text) => Normalize(TextPiece.Original(text, 0)).Text;
}

internal sealed class SequenceNormalizer(IReadOnlyList<HfNormalizer> steps) : HfNormalizer
{
    public override TextPiece Normalize(TextPiece piece)
    {
        foreach (var s in steps) piece = s.Normalize(piece);
        return piece;
    }
}

/// <summary>
/// NFC, NFD, NFKC, NFKD. Text between whitespace never interacts under normalization, so each changed run is
/// normalized alone. Alignment as HF's: within a run, each unit (a base char with its marks and Hangul jamo) maps
/// its output to its source chars: a composed char to the first source char, extra decomposed chars to the char they
/// came from.
/// </summary>
internal sealed class UnicodeFormNormalizer(NormalizationForm form) : HfNormalizer
{
    public override TextPiece Normalize(TextPiece piece)
    {
        string t = piece.Text;
        if (t.IsNormalized(form)) return piece;
        var b = new TextPieceBuilder(t.Length + 8);
        int i = 0;
        while (i < t.Length)
        {
            int end = i;
            while (end < t.Length && !char.IsWhiteSpace(t[end])) end++;
            if (end == i) end = i + 1; // a whitespace char is a run of its own
            string run = t[i..end];
            if (run.IsNormalized(form)) b.AppendFrom(piece, i, end);
            else AppendRun(piece, i, end, run.Normalize(form), b);
            i = end;
        }
        return b.Build();
    }

    private void AppendRun(in TextPiece piece, int start, int end, string normalized, TextPieceBuilder b)
    {
        var units = new List<(int Start, int End, string Output)>();
        var concat = new StringBuilder(normalized.Length);
        for (int u = start; u < end;)
        {
            int e = u + Width(piece.Text, u);
            while (e < end && JoinsPrevious(piece.Text, e)) e += Width(piece.Text, e);
            string output = piece.Text[u..e].Normalize(form);
            units.Add((u, e, output));
            concat.Append(output);
            u = e;
        }
        if (concat.ToString() != normalized)
        {
            b.Append(normalized, piece.StartOf(start), piece.EndOf(end - 1)); // units interact: the run's range for all
            return;
        }
        foreach (var (us, ue, output) in units)
        {
            var src = new List<int>(); // source code points of the unit (char index of each)
            for (int k = us; k < ue; k += Width(piece.Text, k)) src.Add(k);
            var outChars = new List<(int Index, int Width)>();
            for (int k = 0; k < output.Length; k += Width(output, k)) outChars.Add((k, Width(output, k)));
            int m = outChars.Count, l = src.Count;
            for (int k = 0; k < m; k++)
            {
                // Same count: one to one. Fewer (composed): the first to the first source char, the rest to the last ones.
                // More (decomposed): each to the source char it expands from.
                int si = m == l ? k : m < l ? (k == 0 ? 0 : l - m + k) : k * l / m;
                int s0 = src[si], w = Width(piece.Text, s0);
                for (int c = 0; c < outChars[k].Width; c++) b.Append(output[outChars[k].Index + c], piece.StartOf(s0), piece.EndOf(s0 + w - 1));
            }
        }
    }

    private static int Width(string s, int i) => char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1;

    /// <summary>Marks and Hangul medial/final jamo belong to the unit of the char before them.</summary>
    private static bool JoinsPrevious(string s, int i)
    {
        char c = s[i];
        if (c is >= '\u1160' and <= '\u11FF') return true;
        var cat = char.IsSurrogate(c) ? System.Globalization.CharUnicodeInfo.GetUnicodeCategory(s, i) : char.GetUnicodeCategory(c);
        return cat is System.Globalization.UnicodeCategory.NonSpacingMark or System.Globalization.UnicodeCategory.SpacingCombiningMark
            or System.Globalization.UnicodeCategory.EnclosingMark;
    }
}

/// <summary>HF Lowercase: Rust's char::to_lowercase per code point (U+0130 becomes "i̇").</summary>
internal sealed class LowercaseNormalizer : HfNormalizer
{
    public override TextPiece Normalize(TextPiece piece)
    {
        string t = piece.Text;
        var b = new TextPieceBuilder(t.Length);
        Span<char> buf = stackalloc char[2];
        for (int i = 0; i < t.Length;)
        {
            Rune.DecodeFromUtf16(t.AsSpan(i), out var r, out int n);
            int s = piece.StartOf(i), e = piece.EndOf(i + n - 1);
            if (r.Value == 0x130) b.Append("i\u0307", s, e);
            else
            {
                int w = Rune.ToLowerInvariant(r).EncodeToUtf16(buf);
                for (int k = 0; k < w; k++) b.Append(buf[k], s, e);
            }
            i += n;
        }
        return b.Build();
    }
}

/// <summary>HF Prepend: puts a string before non-empty text, aligned with its first char.</summary>
internal sealed class PrependNormalizer(string prefix) : HfNormalizer
{
    public override TextPiece Normalize(TextPiece piece)
    {
        if (piece.Length == 0) return piece;
        var b = new TextPieceBuilder(piece.Length + prefix.Length);
        b.Append(prefix, piece.StartOf(0), piece.FirstCharEnd);
        b.AppendFrom(piece, 0, piece.Length);
        return b.Build();
    }
}

/// <summary>HF Replace: every match of a string or regex becomes <c>content</c>.</summary>
internal sealed class ReplaceNormalizer(TextPattern pattern, string content) : HfNormalizer
{
    public override TextPiece Normalize(TextPiece piece)
    {
        var matches = new List<(int Start, int End)>();
        pattern.Matches(piece.Text, matches);
        if (matches.Count == 0) return piece;
        if (pattern.Literal is { } lit && lit.Length == 1 && content.Length == 1)
            return piece.WithText(piece.Text.Replace(lit[0], content[0]));
        var b = new TextPieceBuilder(piece.Length + matches.Count * content.Length);
        int prev = 0;
        foreach (var (s, e) in matches)
        {
            b.AppendFrom(piece, prev, s);
            if (e > s) b.Append(content, piece.StartOf(s), piece.EndOf(e - 1));
            prev = e;
        }
        b.AppendFrom(piece, prev, piece.Length);
        return b.Build();
    }

    /// <summary>The same replacement on a decoded token (HF's Replace decoder).</summary>
    public string Apply(string token)
    {
        if (pattern.Literal is { } lit) return token.Replace(lit, content, StringComparison.Ordinal);
        var matches = new List<(int Start, int End)>();
        pattern.Matches(token, matches);
        var sb = new StringBuilder(token.Length);
        int prev = 0;
        foreach (var (s, e) in matches) { sb.Append(token, prev, s - prev).Append(content); prev = e; }
        return sb.Append(token, prev, token.Length - prev).ToString();
    }
}

/// <summary>HF Strip: removes whitespace at the start and/or end.</summary>
internal sealed class StripNormalizer(bool left, bool right) : HfNormalizer
{
    public override TextPiece Normalize(TextPiece piece)
    {
        string t = piece.Text;
        int s = 0, e = t.Length;
        if (left) while (s < e && char.IsWhiteSpace(t[s])) s++;
        if (right) while (e > s && char.IsWhiteSpace(t[e - 1])) e--;
        return piece.Slice(s, e - s);
    }
}

/// <summary>A Split/Replace pattern: a literal string or a regex (HF's <c>{"String": ...}</c> / <c>{"Regex": ...}</c>).</summary>
internal sealed class TextPattern
{
    private readonly UnicodeRegex? _regex;

    private TextPattern(string? literal, UnicodeRegex? regex) { Literal = literal; _regex = regex; }

    public static TextPattern ForString(string s) => new(s, null);
    public static TextPattern ForRegex(string pattern, string where) => new(null, new UnicodeRegex(pattern, where));

    public string? Literal { get; }

    public void Matches(string text, List<(int Start, int End)> output)
    {
        if (_regex is not null) { _regex.Matches(text, output); return; }
        if (Literal!.Length == 0) return; // HF: an empty string pattern matches nothing
        int at = 0;
        while ((at = text.IndexOf(Literal, at, StringComparison.Ordinal)) >= 0) { output.Add((at, at + Literal.Length)); at += Literal.Length; }
    }
}
