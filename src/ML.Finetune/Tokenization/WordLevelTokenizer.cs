using System.Buffers;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace ML.Finetune.Tokenization;

/// <summary>
/// A word-level tokenizer (HF <c>tokenizers</c> "WordLevel" model) on top of Microsoft.ML.Tokenizers' abstractions:
/// special tokens are matched first, the remaining text is split by the pre-tokenizer and each piece maps to its id,
/// or to the unknown token's id. Decoding joins tokens with a single space, as HF does without a decoder.
/// </summary>
public sealed class WordLevelTokenizer : Tokenizer
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<int, string> _reverse;
    private readonly Dictionary<string, int> _special;
    private readonly string[] _specialByLength;
    private readonly PreTokenizer? _preTokenizer;
    private readonly Normalizer? _normalizer;

    public WordLevelTokenizer(IReadOnlyDictionary<string, int> vocabulary, string unknownToken,
        IReadOnlyDictionary<string, int>? specialTokens = null, PreTokenizer? preTokenizer = null, Normalizer? normalizer = null)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        ArgumentNullException.ThrowIfNull(unknownToken);
        _vocab = new Dictionary<string, int>(vocabulary, StringComparer.Ordinal);
        _special = specialTokens is null ? new(StringComparer.Ordinal) : new Dictionary<string, int>(specialTokens, StringComparer.Ordinal);
        if (!_vocab.TryGetValue(unknownToken, out int unkId) && !_special.TryGetValue(unknownToken, out unkId))
            throw new ArgumentException($"Unknown token '{unknownToken}' is not in the vocabulary.", nameof(unknownToken));
        UnknownToken = unknownToken;
        UnknownId = unkId;
        _reverse = new Dictionary<int, string>();
        foreach (var kv in _vocab) _reverse[kv.Value] = kv.Key;
        foreach (var kv in _special) _reverse[kv.Value] = kv.Key;
        _specialByLength = _special.Keys.Where(k => k.Length > 0).OrderByDescending(k => k.Length).ToArray();
        _preTokenizer = preTokenizer;
        _normalizer = normalizer;
    }

    public string UnknownToken { get; }
    public int UnknownId { get; }
    public IReadOnlyDictionary<string, int> Vocabulary => _vocab;
    public IReadOnlyDictionary<string, int> SpecialTokens => _special;
    public override PreTokenizer? PreTokenizer => _preTokenizer;
    public override Normalizer? Normalizer => _normalizer;

    /// <summary>Id of <paramref name="token"/> (vocabulary or special), or null.</summary>
    public int? MapTokenToId(string token) =>
        _special.TryGetValue(token, out int id) || _vocab.TryGetValue(token, out id) ? id : null;

    /// <summary>Token string for <paramref name="id"/>, or null.</summary>
    public string? MapIdToToken(int id) => _reverse.TryGetValue(id, out var t) ? t : null;

    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        string source = text ?? textSpan.ToString();
        string normalized = settings.ConsiderNormalization && _normalizer is not null ? _normalizer.Normalize(source) : source;
        int max = settings.MaxTokenCount <= 0 ? int.MaxValue : settings.MaxTokenCount;
        var tokens = new List<EncodedToken>();
        int consumed = 0;
        int pos = 0;
        while (pos < normalized.Length && tokens.Count < max)
        {
            // Find the next special token occurrence (earliest, then longest).
            int nextPos = normalized.Length;
            string? nextSpecial = null;
            foreach (var s in _specialByLength)
            {
                int at = normalized.IndexOf(s, pos, StringComparison.Ordinal);
                if (at >= 0 && at < nextPos) { nextPos = at; nextSpecial = s; }
            }
            if (nextPos > pos)
            {
                string segment = normalized.Substring(pos, nextPos - pos);
                IEnumerable<(int Offset, int Length)> pieces = settings.ConsiderPreTokenization && _preTokenizer is not null
                    ? _preTokenizer.PreTokenize(segment)
                    : (segment.Length > 0 ? new[] { (0, segment.Length) } : Array.Empty<(int, int)>());
                foreach (var (off, len) in pieces)
                {
                    if (tokens.Count >= max) break;
                    if (len == 0) continue;
                    string word = segment.Substring(off, len);
                    int start = pos + off;
                    int id = _vocab.TryGetValue(word, out int v) ? v : UnknownId;
                    tokens.Add(new EncodedToken(id, id == UnknownId ? UnknownToken : word, new Range(start, start + len)));
                    consumed = start + len;
                }
                if (tokens.Count >= max) break;
                consumed = nextPos;
            }
            if (nextSpecial is not null)
            {
                if (tokens.Count >= max) break;
                tokens.Add(new EncodedToken(_special[nextSpecial], nextSpecial, new Range(nextPos, nextPos + nextSpecial.Length)));
                pos = nextPos + nextSpecial.Length;
                consumed = pos;
            }
            else
            {
                pos = normalized.Length;
            }
        }
        if (tokens.Count < max) consumed = normalized.Length;
        return new EncodeResults<EncodedToken>
        {
            Tokens = tokens,
            NormalizedText = ReferenceEquals(normalized, source) || normalized == source ? null : normalized,
            CharsConsumed = consumed,
        };
    }

    public override string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            if (!_reverse.TryGetValue(id, out var tok)) continue;
            if (sb.Length > 0) sb.Append(' ');
            sb.Append(tok);
        }
        return sb.ToString();
    }

    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten)
    {
        ArgumentNullException.ThrowIfNull(ids);
        idsConsumed = 0;
        charsWritten = 0;
        foreach (int id in ids)
        {
            if (_reverse.TryGetValue(id, out var tok))
            {
                int need = tok.Length + (charsWritten > 0 ? 1 : 0);
                if (charsWritten + need > destination.Length) return OperationStatus.DestinationTooSmall;
                if (charsWritten > 0) destination[charsWritten++] = ' ';
                tok.AsSpan().CopyTo(destination.Slice(charsWritten));
                charsWritten += tok.Length;
            }
            idsConsumed++;
        }
        return OperationStatus.Done;
    }
}
