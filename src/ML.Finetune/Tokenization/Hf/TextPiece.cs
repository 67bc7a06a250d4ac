using System.Text;

namespace ML.Finetune.Tokenization;

/// <summary>
/// Text on its way through a normalizer and pre-tokenizers, with the input range each of its chars came from, so that
/// tokens get offsets into the caller's string (as HF's NormalizedString keeps its alignments).
/// </summary>
internal readonly struct TextPiece
{
    public readonly string Text;
    private readonly int[]? _starts;   // original [start, end) of each char; null: char i came from _shift + i
    private readonly int[]? _ends;
    private readonly int _shift;

    private TextPiece(string text, int[]? starts, int[]? ends, int shift)
    {
        Text = text; _starts = starts; _ends = ends; _shift = shift;
    }

    /// <summary>Unchanged input text that starts at <paramref name="shift"/> in the caller's string.</summary>
    public static TextPiece Original(string text, int shift) => new(text, null, null, shift);

    public static TextPiece Aligned(string text, int[] starts, int[] ends) => new(text, starts, ends, 0);

    public int Length => Text.Length;
    public bool IsIdentity => _starts is null;
    public int StartOf(int i) => _starts is null ? _shift + i : _starts[i];
    public int EndOf(int i) => _ends is null ? _shift + i + 1 : _ends[i];

    public TextPiece Slice(int start, int length)
    {
        if (start == 0 && length == Text.Length) return this;
        string t = Text.Substring(start, length);
        return _starts is null ? new(t, null, null, _shift + start) : new(t, _starts.AsSpan(start, length).ToArray(), _ends!.AsSpan(start, length).ToArray(), 0);
    }

    /// <summary>Original end of the first code point (a prepended char aligns with that whole code point, as in HF).</summary>
    public int FirstCharEnd => EndOf(Length > 1 && char.IsHighSurrogate(Text[0]) && char.IsLowSurrogate(Text[1]) ? 1 : 0);

    /// <summary>Same alignment, other chars of the same length (a 1:1 replacement such as ' ' → '▁').</summary>
    public TextPiece WithText(string sameLengthText) => new(sameLengthText, _starts, _ends, _shift);
}

/// <summary>Builds a <see cref="TextPiece"/> char by char, each with its original range.</summary>
internal sealed class TextPieceBuilder
{
    private readonly StringBuilder _text;
    private readonly List<int> _starts, _ends;

    public TextPieceBuilder(int capacity)
    {
        _text = new StringBuilder(capacity); _starts = new List<int>(capacity); _ends = new List<int>(capacity);
    }

    public void Append(char c, int start, int end) { _text.Append(c); _starts.Add(start); _ends.Add(end); }

    public void Append(string s, int start, int end) { foreach (char c in s) Append(c, start, end); }

    /// <summary>Copies chars [from, to) of <paramref name="piece"/> with their alignment.</summary>
    public void AppendFrom(in TextPiece piece, int from, int to)
    {
        for (int i = from; i < to; i++) Append(piece.Text[i], piece.StartOf(i), piece.EndOf(i));
    }

    public TextPiece Build() => TextPiece.Aligned(_text.ToString(), _starts.ToArray(), _ends.ToArray());
}
