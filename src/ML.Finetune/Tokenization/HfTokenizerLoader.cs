using System.Text;
using Microsoft.ML.Tokenizers;

namespace ML.Finetune.Tokenization;

/// <summary>
/// A tokenizer built from a folder's tokenizer file, before special tokens are resolved, with the BOS/EOS/PAD/UNK
/// strings its transformers class uses when the config names none (GPT2Tokenizer: &lt;|endoftext|&gt;).
/// </summary>
internal sealed record LoadedTokenizer(Tokenizer Tokenizer, string SourceFile, IReadOnlyDictionary<string, string>? ClassDefaults = null);

/// <summary>Loaders for HF tokenizer files: tokenizer.json, vocab.json + merges.txt, tokenizer.model.</summary>
internal static class HfTokenizerLoader
{
    /// <summary>Qwen2Tokenizer's pre-tokenization regex (transformers' PRETOKENIZE_REGEX).</summary>
    internal const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string EndOfText = "<|endoftext|>";

    public static LoadedTokenizer LoadTokenizerJson(string path) => new(HfTokenizer.FromFile(path), path);

    /// <summary>
    /// vocab.json + merges.txt as transformers builds them for the folder's tokenizer_class: GPT2Tokenizer (also when
    /// no class is named) or Qwen2Tokenizer. Other classes are refused naming tokenizer_class.
    /// </summary>
    public static LoadedTokenizer LoadVocabMerges(string vocabPath, string mergesPath, SpecialTokenConfig cfg)
    {
        string? cls = cfg.TokenizerClass;
        bool qwen = cls is "Qwen2Tokenizer" or "Qwen2TokenizerFast";
        if (cls is not (null or "GPT2Tokenizer" or "GPT2TokenizerFast") && !qwen)
            throw new NotSupportedException($"Tokenizer config '{cfg.TokenizerConfigPath}': tokenizer_class '{cls}' with vocab.json + merges.txt " +
                "is not supported (supported: GPT2Tokenizer, Qwen2Tokenizer; or ship a tokenizer.json).");
        Dictionary<string, int> vocab;
        using (var doc = JsonFiles.Load(vocabPath))
        {
            if (doc.RootElement.ValueKind != System.Text.Json.JsonValueKind.Object) throw JsonFiles.Bad(vocabPath, "$", "must be an object mapping tokens to ids");
            vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var p in doc.RootElement.EnumerateObject()) vocab[p.Name] = JsonFiles.GetInt(vocabPath, p.Value, $"[\"{p.Name}\"]");
        }
        var merges = ReadMergesFile(mergesPath);
        BpeModel model;
        try { model = new BpeModel(vocab, merges, new BpeOptionsHf(), i => $"merge {i + 1}"); }
        catch (InvalidDataException ex) { throw new InvalidDataException($"Invalid merges file '{mergesPath}': {ex.Message}", ex); }
        bool prefixSpace = cfg.AddPrefixSpace ?? false;
        HfNormalizer? normalizer = qwen ? new UnicodeFormNormalizer(NormalizationForm.FormC) : null;
        HfPreTokenizer pre = qwen
            ? new SequencePreTokenizer(new HfPreTokenizer[] { new SplitPreTokenizer(TextPattern.ForRegex(Qwen2Pattern, "Qwen2 pre-tokenizer"), SplitBehavior.Isolated, false), new ByteLevelPreTokenizer(prefixSpace, false) })
            : new ByteLevelPreTokenizer(prefixSpace, true);
        var tok = new HfTokenizer(model, normalizer, pre, PostProcessor.None, new ByteLevelDecoder(), Array.Empty<AddedToken>(), "BPE");
        var defaults = qwen
            ? new Dictionary<string, string> { ["unk_token"] = EndOfText, ["eos_token"] = EndOfText, ["pad_token"] = EndOfText }
            : new Dictionary<string, string> { ["unk_token"] = EndOfText, ["bos_token"] = EndOfText, ["eos_token"] = EndOfText };
        return new LoadedTokenizer(tok, vocabPath, defaults);
    }

    /// <summary>merges.txt: "a b" per line; "#version" lines and blank lines skipped.</summary>
    private static List<(string, string)> ReadMergesFile(string path)
    {
        var merges = new List<(string, string)>();
        int lineNo = 0;
        foreach (var raw in File.ReadLines(path))
        {
            lineNo++;
            string line = raw.TrimEnd('\r');
            if (line.Length == 0 || line.StartsWith("#version", StringComparison.Ordinal)) continue;
            var parts = line.Split(' ');
            if (parts.Length != 2)
                throw new InvalidDataException($"Invalid merges file '{path}': line {lineNo} must be two tokens separated by one space but is '{line}'.");
            merges.Add((parts[0], parts[1]));
        }
        return merges;
    }

    /// <summary>tokenizer.model (SentencePiece) through Microsoft.ML.Tokenizers' LlamaTokenizer.</summary>
    public static LoadedTokenizer LoadSentencePiece(string modelPath, IReadOnlyDictionary<string, int> specials)
    {
        try
        {
            using var stream = File.OpenRead(modelPath);
            var tok = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false,
                specialTokens: specials.Count > 0 ? specials : null);
            return new LoadedTokenizer(tok, modelPath);
        }
        catch (Exception ex) when (ex is not IOException and not UnauthorizedAccessException)
        {
            throw new InvalidDataException($"Could not read SentencePiece model '{modelPath}': {ex.Message}", ex);
        }
    }
}
