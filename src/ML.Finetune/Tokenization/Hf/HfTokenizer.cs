using System.Buffers;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace ML.Finetune.Tokenization;

/// <summary>Options of one <see cref="HfTokenizer"/> encode call.</summary>
/// <param name="AddSpecialTokens">HF's add_special_tokens: apply the post-processor (BOS/EOS template).</param>
/// <param name="SplitSpecialTokens">HF's split_special_tokens: special added tokens typed in the text stay plain text
/// (for untrusted text). Null: the tokenizer's default (<see cref="HfTokenizer.SplitSpecialTokens"/>).</param>
public readonly record struct HfEncodeOptions(bool AddSpecialTokens = false, bool? SplitSpecialTokens = null);

/// <summary>
/// A Hugging Face <c>tokenizers</c> pipeline in managed code, exposed as a Microsoft.ML.Tokenizers
/// <see cref="Tokenizer"/>: added tokens, normalizer, pre-tokenizer, model (BPE or WordLevel), post-processor and
/// decoder as tokenizer.json describes them, with the same ids and decoded text as HF's Rust library.
/// The <see cref="Tokenizer"/> methods encode without special tokens (HF's add_special_tokens=False) and decode
/// keeping them (HF's default).
/// </summary>
public sealed class HfTokenizer : Tokenizer
{
    private readonly HfModel _model;
    private readonly HfNormalizer? _normalizer;
    private readonly HfPreTokenizer? _preTokenizer;
    private readonly HfDecoder? _decoder;
    private readonly AddedTokenMatcher _rawMatcher, _normalizedMatcher;
    private readonly Dictionary<int, (AddedToken Token, string DecodeAs)> _addedById = new();
    private readonly Dictionary<string, int> _addedByContent = new(StringComparer.Ordinal);
    private readonly HashSet<string> _specialContents = new(StringComparer.Ordinal);
    private readonly PostProcessor _post;
    private readonly bool _cleanUpSpaces;

    internal HfTokenizer(HfModel model, HfNormalizer? normalizer, HfPreTokenizer? preTokenizer, PostProcessor postProcessor,
        HfDecoder? decoder, IReadOnlyList<AddedToken> addedTokens, string modelType, bool splitSpecialTokens = false, bool cleanUpSpaces = false)
    {
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _post = postProcessor;
        _decoder = decoder;
        ModelType = modelType;
        SplitSpecialTokens = splitSpecialTokens;
        _cleanUpSpaces = cleanUpSpaces;
        AddedTokens = addedTokens;
        foreach (var t in addedTokens)
        {
            // HF decodes a normalized added token as its normalized form.
            string decodeAs = t.Normalized && normalizer is not null ? normalizer.Normalize(t.Content) : t.Content;
            _addedById[t.Id] = (t, decodeAs);
            _addedByContent[t.Content] = t.Id;
            if (t.Special) _specialContents.Add(t.Content);
        }
        _rawMatcher = new AddedTokenMatcher(addedTokens.Where(t => !t.Normalized), t => t.Content);
        _normalizedMatcher = new AddedTokenMatcher(addedTokens.Where(t => t.Normalized), t => _addedById[t.Id].DecodeAs);
        int max = model.IdCount - 1;
        foreach (var t in addedTokens) max = Math.Max(max, t.Id);
        IdCount = max + 1;
    }

    /// <summary>Loads a HF tokenizer.json; values it does not implement are refused naming the field.</summary>
    public static HfTokenizer FromFile(string tokenizerJsonPath) => TokenizerJsonReader.Read(tokenizerJsonPath);

    /// <summary>"BPE" or "WordLevel".</summary>
    public string ModelType { get; }
    /// <summary>Tokens matched whole before the model runs (tokenizer.json's added_tokens and the config's special tokens).</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }
    /// <summary>Default of <see cref="HfEncodeOptions.SplitSpecialTokens"/> (tokenizer_config.json's split_special_tokens).</summary>
    public bool SplitSpecialTokens { get; }
    /// <summary>Highest id (model vocabulary or added token) + 1.</summary>
    public int IdCount { get; }
    /// <summary>Ids the post-processor puts before / after the text when special tokens are added.</summary>
    public IReadOnlyList<int> SpecialPrefixIds => _post.Prefix;
    public IReadOnlyList<int> SpecialSuffixIds => _post.Suffix;

    public int? TokenToId(string token) => _addedByContent.TryGetValue(token, out int id) ? id : _model.TokenToId(token);
    public string? IdToToken(int id) => _addedById.TryGetValue(id, out var a) ? a.Token.Content : _model.IdToToken(id);
    /// <summary>The model's unknown-token id (WordLevel, BPE with unk_token), or null when every text has ids.</summary>
    public int? UnknownId => _model.UnknownId;

    /// <summary>Whether <paramref name="id"/> is an added token marked special (dropped by skipSpecialTokens).</summary>
    public bool IsSpecial(int id) => _addedById.TryGetValue(id, out var a) && a.Token.Special;

    /// <summary>A copy with another post-processor, more added tokens (ids assigned as HF's add_tokens does) or options.</summary>
    internal HfTokenizer With(PostProcessor? postProcessor = null, IEnumerable<AddedToken>? extraTokens = null, bool? splitSpecialTokens = null, bool? cleanUpSpaces = null) =>
        new(_model, _normalizer, _preTokenizer, postProcessor ?? _post, _decoder,
            extraTokens is null ? AddedTokens : AddTokens(AddedTokens, extraTokens, _model), ModelType,
            splitSpecialTokens ?? SplitSpecialTokens, cleanUpSpaces ?? _cleanUpSpaces);

    /// <summary>
    /// HF's AddedVocabulary.add_tokens: a token keeps the id its content already has (added token or model vocabulary,
    /// whatever id the file declared), else takes the next free id; a token with the same content replaces the old flags.
    /// </summary>
    internal static IReadOnlyList<AddedToken> AddTokens(IReadOnlyList<AddedToken> existing, IEnumerable<AddedToken> tokens, HfModel model)
    {
        var result = existing.ToList();
        int vocabSize = model.Vocab.Count;
        int next = result.Count == 0 ? vocabSize : result.Max(t => t.Id) is int max && (max >= vocabSize || vocabSize == 0) ? max + 1 : vocabSize;
        foreach (var t in tokens)
        {
            if (t.Content.Length == 0) continue;
            int at = result.FindIndex(x => x.Content == t.Content);
            int id = at >= 0 ? result[at].Id : model.TokenToId(t.Content) ?? next++;
            if (at >= 0) result[at] = t with { Id = id };
            else result.Add(t with { Id = id });
        }
        return result;
    }

    // ---------------- encode ----------------

    /// <summary>HF's <c>encode(text, add_special_tokens)</c>: the ids.</summary>
    public IReadOnlyList<int> EncodeToIds(string text, HfEncodeOptions options)
    {
        ArgumentNullException.ThrowIfNull(text);
        var spans = new List<(int Id, int Start, int End)>();
        Encode(text, options.SplitSpecialTokens ?? SplitSpecialTokens, true, true, spans);
        var ids = new List<int>(spans.Count + _post.Prefix.Count + _post.Suffix.Count);
        if (options.AddSpecialTokens) ids.AddRange(_post.Prefix);
        foreach (var s in spans) ids.Add(s.Id);
        if (options.AddSpecialTokens) ids.AddRange(_post.Suffix);
        return ids;
    }

    /// <summary>HF's encode with tokens and character offsets into <paramref name="text"/> (template tokens get 0..0).</summary>
    public IReadOnlyList<EncodedToken> EncodeToTokens(string text, HfEncodeOptions options)
    {
        ArgumentNullException.ThrowIfNull(text);
        var spans = new List<(int Id, int Start, int End)>();
        Encode(text, options.SplitSpecialTokens ?? SplitSpecialTokens, true, true, spans);
        var result = new List<EncodedToken>(spans.Count + 2);
        if (options.AddSpecialTokens) foreach (int id in _post.Prefix) result.Add(new EncodedToken(id, IdToToken(id) ?? "", new Range(0, 0)));
        for (int k = 0; k < spans.Count; k++)
        {
            var (id, start, end) = spans[k];
            string value = IdToToken(id) ?? "";
            var (s, e) = _post.TrimOffsets ? TrimOffsets(value, start, end, k == 0) : (start, end);
            result.Add(new EncodedToken(id, value, new Range(s, e)));
        }
        if (options.AddSpecialTokens) foreach (int id in _post.Suffix) result.Add(new EncodedToken(id, IdToToken(id) ?? "", new Range(0, 0)));
        return result;
    }

    /// <summary>HF ByteLevel post-processor's trim_offsets: leading/trailing spaces of a token are not part of its offsets.</summary>
    private (int, int) TrimOffsets(string token, int start, int end, bool first)
    {
        static bool IsSpace(char c) => c == ByteLevelEncoding.ByteToChar((byte)' ') || char.IsWhiteSpace(c);
        int lead = 0, trail = 0;
        while (lead < token.Length && IsSpace(token[lead])) lead++;
        while (trail < token.Length && IsSpace(token[token.Length - 1 - trail])) trail++;
        if (lead > 0)
        {
            if ((first || start == 0) && _post.AddPrefixSpace && lead == 1) lead = 0;
            start = Math.Min(start + lead, end);
        }
        if (trail > 0 && end >= trail) end = Math.Max(end - trail, start);
        return (start, end);
    }

    private void Encode(string text, bool splitSpecial, bool normalize, bool preTokenize, List<(int Id, int Start, int End)> output)
    {
        text = WithoutLoneSurrogates(text);
        var matches = new List<(int Start, int End, AddedToken Token)>();
        if (!_rawMatcher.IsEmpty) _rawMatcher.Find(text, splitSpecial, matches);
        int prev = 0;
        foreach (var (s, e, tok) in matches)
        {
            if (s > prev) EncodeSegment(TextPiece.Original(text[prev..s], prev), splitSpecial, normalize, preTokenize, output);
            output.Add((tok.Id, s, e));
            prev = e;
        }
        if (prev < text.Length) EncodeSegment(TextPiece.Original(prev == 0 ? text : text[prev..], prev), splitSpecial, normalize, preTokenize, output);
    }

    private void EncodeSegment(TextPiece piece, bool splitSpecial, bool normalize, bool preTokenize, List<(int Id, int Start, int End)> output)
    {
        if (normalize && _normalizer is not null) piece = _normalizer.Normalize(piece);
        if (_normalizedMatcher.IsEmpty) { EncodeWords(piece, preTokenize, output); return; }
        var matches = new List<(int Start, int End, AddedToken Token)>();
        _normalizedMatcher.Find(piece.Text, splitSpecial, matches);
        int prev = 0;
        foreach (var (s, e, tok) in matches)
        {
            if (s > prev) EncodeWords(piece.Slice(prev, s - prev), preTokenize, output);
            output.Add((tok.Id, piece.StartOf(s), piece.EndOf(e - 1)));
            prev = e;
        }
        if (prev < piece.Length) EncodeWords(piece.Slice(prev, piece.Length - prev), preTokenize, output);
    }

    private void EncodeWords(TextPiece piece, bool preTokenize, List<(int Id, int Start, int End)> output)
    {
        if (piece.Length == 0) return;
        var words = new List<TextPiece>();
        if (preTokenize && _preTokenizer is not null) _preTokenizer.Split(piece, words);
        else words.Add(piece);
        var tokens = new List<ModelToken>();
        foreach (var w in words)
        {
            tokens.Clear();
            _model.Tokenize(w.Text, tokens);
            foreach (var t in tokens) output.Add((t.Id, w.StartOf(t.Start), w.EndOf(t.End - 1)));
        }
    }

    /// <summary>Lone surrogates cannot reach HF (its strings are UTF-8): they become U+FFFD, one char for one, so offsets hold.</summary>
    private static string WithoutLoneSurrogates(string text)
    {
        int i = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (i < 0) return text;
        char[]? copy = null;
        for (; i < text.Length; i++)
        {
            if (!char.IsSurrogate(text[i])) continue;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { i++; continue; }
            copy ??= text.ToCharArray();
            copy[i] = '\uFFFD';
        }
        return copy is null ? text : new string(copy);
    }

    // Microsoft.ML.Tokenizers entry points: no special tokens added (as EncodeToIds is used for completions).
    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        string s = text ?? textSpan.ToString();
        var spans = new List<(int Id, int Start, int End)>();
        Encode(s, SplitSpecialTokens, settings.ConsiderNormalization, settings.ConsiderPreTokenization, spans);
        int max = settings.MaxTokenCount <= 0 ? int.MaxValue : settings.MaxTokenCount;
        var tokens = spans.Take(max).Select(t => new EncodedToken(t.Id, IdToToken(t.Id) ?? "", new Range(t.Start, t.End))).ToList();
        return new EncodeResults<EncodedToken> { Tokens = tokens, CharsConsumed = Consumed(spans, max, s.Length) };
    }

    protected override EncodeResults<int> EncodeToIds(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        string s = text ?? textSpan.ToString();
        var spans = new List<(int Id, int Start, int End)>();
        Encode(s, SplitSpecialTokens, settings.ConsiderNormalization, settings.ConsiderPreTokenization, spans);
        int max = settings.MaxTokenCount <= 0 ? int.MaxValue : settings.MaxTokenCount;
        return new EncodeResults<int> { Tokens = spans.Take(max).Select(t => t.Id).ToList(), CharsConsumed = Consumed(spans, max, s.Length) };
    }

    private static int Consumed(List<(int Id, int Start, int End)> spans, int max, int length) =>
        spans.Count <= max ? length : spans[max - 1].End;

    // ---------------- decode ----------------

    /// <summary>HF's <c>decode(ids, skip_special_tokens)</c>. Ids that are neither in the vocabulary nor added tokens are skipped, as HF does.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            string? t = _addedById.TryGetValue(id, out var a) ? a.DecodeAs : _model.IdToToken(id);
            if (t is null) continue;
            if (skipSpecialTokens && _specialContents.Contains(t)) continue;
            tokens.Add(t);
        }
        string text = _decoder is null ? string.Join(" ", tokens) : string.Concat(_decoder.DecodeChain(tokens));
        return _cleanUpSpaces ? CleanUpTokenizationSpaces(text) : text;
    }

    /// <summary>Decodes keeping special tokens (HF's default).</summary>
    public override string Decode(IEnumerable<int> ids) => Decode(ids, skipSpecialTokens: false);

    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten)
    {
        var list = ids as IReadOnlyCollection<int> ?? ids.ToList();
        string text = Decode(list, skipSpecialTokens: false);
        if (text.Length > destination.Length) { idsConsumed = 0; charsWritten = 0; return OperationStatus.DestinationTooSmall; }
        text.AsSpan().CopyTo(destination);
        idsConsumed = list.Count;
        charsWritten = text.Length;
        return OperationStatus.Done;
    }

    /// <summary>transformers' clean_up_tokenization (for WordPiece-style word lists; transformers skips it for BPE).</summary>
    private static string CleanUpTokenizationSpaces(string text) => new StringBuilder(text)
        .Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
        .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re").ToString();
}
