using System.Text;

namespace ML.Finetune.Tokenization;

/// <summary>One HF pre-tokenizer: splits a piece (and may rewrite it, as ByteLevel and Metaspace do).</summary>
internal abstract class HfPreTokenizer
{
    public abstract void Split(TextPiece piece, List<TextPiece> output);
}

internal sealed class SequencePreTokenizer(IReadOnlyList<HfPreTokenizer> steps) : HfPreTokenizer
{
    public override void Split(TextPiece piece, List<TextPiece> output)
    {
        var current = new List<TextPiece> { piece };
        var next = new List<TextPiece>();
        foreach (var step in steps)
        {
            next.Clear();
            foreach (var p in current) step.Split(p, next);
            (current, next) = (next, current);
        }
        output.AddRange(current);
    }
}

/// <summary>How a split keeps the delimiters it found (HF's SplitDelimiterBehavior).</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

internal static class Splitting
{
    /// <summary>
    /// Cuts <paramref name="piece"/> at <paramref name="matches"/> the way HF's NormalizedString.split does: matches and
    /// the text between them are the candidate parts, merged or dropped per <paramref name="behavior"/>; empty parts go.
    /// </summary>
    public static void Apply(TextPiece piece, List<(int Start, int End)> matches, SplitBehavior behavior, bool invert, List<TextPiece> output)
    {
        var parts = new List<(int S, int E, bool IsMatch)>(matches.Count * 2 + 1);
        int prev = 0;
        foreach (var (s, e) in matches)
        {
            if (prev != s) parts.Add((prev, s, invert));
            parts.Add((s, e, !invert));
            prev = e;
        }
        if (prev != piece.Length) parts.Add((prev, piece.Length, invert));

        var kept = new List<(int S, int E)>(parts.Count);
        switch (behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var p in parts) kept.Add((p.S, p.E));
                break;
            case SplitBehavior.Removed:
                foreach (var p in parts) if (!p.IsMatch) kept.Add((p.S, p.E));
                break;
            case SplitBehavior.Contiguous:
            {
                bool previousMatch = false;
                foreach (var p in parts)
                {
                    if (p.IsMatch == previousMatch && kept.Count > 0) kept[^1] = (kept[^1].S, p.E);
                    else kept.Add((p.S, p.E));
                    previousMatch = p.IsMatch;
                }
                break;
            }
            case SplitBehavior.MergedWithPrevious:
            {
                bool previousMatch = false;
                foreach (var p in parts)
                {
                    if (p.IsMatch && !previousMatch && kept.Count > 0) kept[^1] = (kept[^1].S, p.E);
                    else kept.Add((p.S, p.E));
                    previousMatch = p.IsMatch;
                }
                break;
            }
            case SplitBehavior.MergedWithNext:
            {
                bool previousMatch = false;
                for (int i = parts.Count - 1; i >= 0; i--)
                {
                    var p = parts[i];
                    if (p.IsMatch && !previousMatch && kept.Count > 0) kept[^1] = (p.S, kept[^1].E);
                    else kept.Add((p.S, p.E));
                    previousMatch = p.IsMatch;
                }
                kept.Reverse();
                break;
            }
        }
        foreach (var (s, e) in kept) if (e > s) output.Add(piece.Slice(s, e - s));
    }
}

/// <summary>HF Split: a string or regex pattern with a delimiter behavior, optionally inverted.</summary>
internal sealed class SplitPreTokenizer(TextPattern pattern, SplitBehavior behavior, bool invert) : HfPreTokenizer
{
    public override void Split(TextPiece piece, List<TextPiece> output)
    {
        var matches = new List<(int, int)>();
        pattern.Matches(piece.Text, matches);
        Splitting.Apply(piece, matches, behavior, invert, output);
    }
}

/// <summary>
/// HF ByteLevel: optional leading space, optional GPT-2 regex split, then each UTF-8 byte becomes one char of the
/// GPT-2 byte alphabet (all bytes of a character keep that character's original range).
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : HfPreTokenizer
{
    private static readonly Lazy<UnicodeRegex> s_gpt2 = new(() => new UnicodeRegex(ByteLevelEncoding.Gpt2Pattern, "ByteLevel pre-tokenizer"));

    public override void Split(TextPiece piece, List<TextPiece> output)
    {
        if (addPrefixSpace && piece.Length > 0 && piece.Text[0] != ' ')
        {
            var b = new TextPieceBuilder(piece.Length + 1);
            b.Append(' ', piece.StartOf(0), piece.FirstCharEnd);
            b.AppendFrom(piece, 0, piece.Length);
            piece = b.Build();
        }
        if (!useRegex) { output.Add(ToBytes(piece)); return; }
        var matches = new List<(int, int)>();
        s_gpt2.Value.Matches(piece.Text, matches);
        var parts = new List<TextPiece>();
        Splitting.Apply(piece, matches, SplitBehavior.Isolated, false, parts);
        foreach (var p in parts) output.Add(ToBytes(p));
    }

    public static TextPiece ToBytes(TextPiece piece)
    {
        string t = piece.Text;
        bool ascii = System.Text.Ascii.IsValid(t);
        if (ascii && piece.IsIdentity)
        {
            // One byte per char: same alignment.
            return piece.WithText(string.Create(t.Length, t, static (dst, src) =>
            {
                for (int i = 0; i < src.Length; i++) dst[i] = ByteLevelEncoding.ByteToChar((byte)src[i]);
            }));
        }
        var b = new TextPieceBuilder(t.Length * 2);
        Span<byte> bytes = stackalloc byte[4];
        for (int i = 0; i < t.Length;)
        {
            if (Rune.DecodeFromUtf16(t.AsSpan(i), out var r, out int n) != System.Buffers.OperationStatus.Done) r = Rune.ReplacementChar;
            int s = piece.StartOf(i), e = piece.EndOf(i + n - 1);
            int w = r.EncodeToUtf8(bytes);
            for (int k = 0; k < w; k++) b.Append(ByteLevelEncoding.ByteToChar(bytes[k]), s, e);
            i += n;
        }
        return b.Build();
    }
}

/// <summary>HF Metaspace: spaces become the replacement char, which is prepended per the scheme, optionally split on.</summary>
internal sealed class MetaspacePreTokenizer(char replacement, MetaspacePreTokenizer.Prepend scheme, bool split) : HfPreTokenizer
{
    public enum Prepend { Always, Never, First }

    public override void Split(TextPiece piece, List<TextPiece> output)
    {
        piece = piece.WithText(piece.Text.Replace(' ', replacement));
        bool prepend = piece.Length > 0 && piece.Text[0] != replacement &&
                       (scheme == Prepend.Always || (scheme == Prepend.First && piece.StartOf(0) == 0));
        if (prepend)
        {
            var b = new TextPieceBuilder(piece.Length + 1);
            b.Append(replacement, piece.StartOf(0), piece.FirstCharEnd);
            b.AppendFrom(piece, 0, piece.Length);
            piece = b.Build();
        }
        if (!split) { output.Add(piece); return; }
        var matches = new List<(int, int)>();
        for (int i = 0; i < piece.Length; i++) if (piece.Text[i] == replacement) matches.Add((i, i + 1));
        Splitting.Apply(piece, matches, SplitBehavior.MergedWithNext, false, output);
    }
}

/// <summary>Splits on a per-code-point predicate (HF's char patterns: WhitespaceSplit, Digits).</summary>
internal sealed class CharClassPreTokenizer(Func<Rune, bool> isMatch, SplitBehavior behavior) : HfPreTokenizer
{
    /// <summary>HF Whitespace: runs of word chars and runs of other non-space chars (<c>\w+|[^\w\s]+</c>).</summary>
    public static HfPreTokenizer Whitespace() => new WhitespacePreTokenizer();

    /// <summary>HF WhitespaceSplit: splits on whitespace and drops it.</summary>
    public static HfPreTokenizer WhitespaceSplit() => new CharClassPreTokenizer(Rune.IsWhiteSpace, SplitBehavior.Removed);

    /// <summary>HF Digits: numeric chars isolated one by one, or kept in contiguous runs.</summary>
    public static HfPreTokenizer Digits(bool individual) =>
        new CharClassPreTokenizer(Rune.IsNumber, individual ? SplitBehavior.Isolated : SplitBehavior.Contiguous);

    public override void Split(TextPiece piece, List<TextPiece> output)
    {
        var matches = new List<(int, int)>();
        string t = piece.Text;
        for (int i = 0; i < t.Length;)
        {
            Rune.DecodeFromUtf16(t.AsSpan(i), out var r, out int n);
            if (isMatch(r)) matches.Add((i, i + n));
            i += n;
        }
        Splitting.Apply(piece, matches, behavior, false, output);
    }
}

/// <summary>HF Whitespace pre-tokenizer (Rust regex <c>\w+|[^\w\s]+</c>, matches kept, the rest removed).</summary>
internal sealed class WhitespacePreTokenizer : HfPreTokenizer
{
    public override void Split(TextPiece piece, List<TextPiece> output)
    {
        string t = piece.Text;
        int i = 0;
        while (i < t.Length)
        {
            Rune.DecodeFromUtf16(t.AsSpan(i), out var r, out int n);
            if (Rune.IsWhiteSpace(r)) { i += n; continue; }
            bool word = UnicodeText.IsWordChar(r);
            int start = i;
            i += n;
            while (i < t.Length)
            {
                Rune.DecodeFromUtf16(t.AsSpan(i), out r, out n);
                if (Rune.IsWhiteSpace(r) || UnicodeText.IsWordChar(r) != word) break;
                i += n;
            }
            output.Add(piece.Slice(start, i - start));
        }
    }
}
