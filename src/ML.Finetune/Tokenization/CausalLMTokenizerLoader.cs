using Microsoft.ML.Tokenizers;

namespace ML.Finetune.Tokenization;

/// <summary><see cref="CausalLMTokenizer.FromFolder"/>: picks the tokenizer file, then resolves special tokens from the configs.</summary>
internal static class CausalLMTokenizerLoader
{
    public static CausalLMTokenizer Load(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"Tokenizer folder '{folder}' does not exist.");

        var cfg = SpecialTokenConfig.Read(folder);
        string tj = Path.Combine(folder, "tokenizer.json");
        string vj = Path.Combine(folder, "vocab.json");
        string mt = Path.Combine(folder, "merges.txt");
        string sp = Path.Combine(folder, "tokenizer.model");

        if (File.Exists(tj))
        {
            LoadedTokenizer loaded;
            try { loaded = HfTokenizerLoader.LoadTokenizerJson(tj); }
            catch (NotSupportedException) when (File.Exists(sp)) { return FromSentencePiece(sp, cfg); }
            return FromHf(loaded, cfg);
        }
        if (File.Exists(vj) && File.Exists(mt)) return FromHf(HfTokenizerLoader.LoadVocabMerges(vj, mt, cfg), cfg);
        if (File.Exists(sp)) return FromSentencePiece(sp, cfg);
        throw new FileNotFoundException(
            $"No tokenizer files found in '{folder}'. Looked for: tokenizer.json, vocab.json + merges.txt, tokenizer.model." +
            (File.Exists(vj) ? " (vocab.json exists but merges.txt is missing.)" : "") +
            (File.Exists(mt) ? " (merges.txt exists but vocab.json is missing.)" : ""),
            tj);
    }

    /// <summary>A role's token: the config's entry, else the tokenizer class's default (unless the config set it to null).</summary>
    private static SpecialTokenConfig.Entry? Role(SpecialTokenConfig cfg, SpecialTokenConfig.Entry? entry, string field, LoadedTokenizer loaded) =>
        entry ?? (loaded.ClassDefaults is { } d && d.TryGetValue(field, out var tok) && !cfg.ExplicitlyNull.Contains(field)
            ? new SpecialTokenConfig.Entry(loaded.SourceFile, field + " (tokenizer class default)", tok, null) : null);

    private static CausalLMTokenizer FromHf(LoadedTokenizer loaded, SpecialTokenConfig cfg)
    {
        var hf = (HfTokenizer)loaded.Tokenizer;
        // As transformers: added_tokens_decoder entries and named special tokens missing from the tokenizer become added tokens.
        var extra = new List<AddedToken>(cfg.AddedTokens);
        var bosE = Role(cfg, cfg.Bos, "bos_token", loaded);
        var eosE = Role(cfg, cfg.Eos, "eos_token", loaded);
        var padE = Role(cfg, cfg.Pad, "pad_token", loaded);
        var unkE = Role(cfg, cfg.Unk, "unk_token", loaded);
        var named = new[] { bosE, eosE, padE, unkE }.Select(e => e?.Token).Concat(cfg.AdditionalSpecialTokens);
        foreach (var t in named)
            if (t is not null && hf.TokenToId(t) is { } id && !hf.AddedTokens.Concat(extra).Any(x => x.Content == t))
                extra.Add(new AddedToken(id, t, Special: true, NormalizedOrDefault: false));
        hf = hf.With(extraTokens: extra, splitSpecialTokens: cfg.SplitSpecialTokens ?? false,
            cleanUpSpaces: cfg.CleanUpTokenizationSpaces == true && hf.ModelType != "BPE"); // transformers skips the clean-up for BPE

        int? Resolve(SpecialTokenConfig.Entry? entry, string role)
        {
            if (entry is null) return null;
            if (entry.Id is { } id) return id;
            return hf.TokenToId(entry.Token!) ?? throw new InvalidDataException(
                $"Invalid tokenizer file '{entry.File}': field '{entry.Field}' names {role} token '{entry.Token}', which is not in the tokenizer's vocabulary ({loaded.SourceFile}).");
        }
        int? bos = Resolve(bosE, "BOS"), eos = Resolve(eosE, "EOS"), pad = Resolve(padE, "PAD");
        // No config names them: a template's single leading / trailing special token is BOS / EOS.
        bos ??= hf.SpecialPrefixIds.Count == 1 ? hf.SpecialPrefixIds[0] : null;
        eos ??= hf.SpecialSuffixIds.Count == 1 ? hf.SpecialSuffixIds[0] : null;
        if (cfg.AddBosToken is not null || cfg.AddEosToken is not null)
            hf = hf.With(postProcessor: PostProcessor.FromBosEos(cfg.AddBosToken == true ? bos : null, cfg.AddEosToken == true ? eos : null));

        var specialIds = hf.AddedTokens.Where(t => t.Special).Select(t => t.Id).ToList();
        string? Name(SpecialTokenConfig.Entry? e, int? id) => e?.Token ?? (id is { } i ? hf.IdToToken(i) : null);
        return CausalLMTokenizer.Create(hf, hf.IdCount, bos, eos, pad, Name(bosE, bos), Name(eosE, eos), Name(padE, pad),
            false, false, specialIds, null, loaded.SourceFile, null, hf.SplitSpecialTokens);
    }

    private static CausalLMTokenizer FromSentencePiece(string path, SpecialTokenConfig cfg)
    {
        var added = cfg.AddedTokens.ToDictionary(t => t.Content, t => t.Id, StringComparer.Ordinal);
        var loaded = HfTokenizerLoader.LoadSentencePiece(path, added);
        var spt = (SentencePieceTokenizer)loaded.Tokenizer;
        var all = new Dictionary<string, int>(spt.Vocabulary, StringComparer.Ordinal);
        foreach (var kv in added) all[kv.Key] = kv.Value;

        int? Resolve(SpecialTokenConfig.Entry? entry, string role)
        {
            if (entry is null) return null;
            if (entry.Id is { } id) return id;
            if (all.TryGetValue(entry.Token!, out int tid)) return tid;
            throw new InvalidDataException($"Invalid tokenizer file '{entry.File}': field '{entry.Field}' names {role} token '{entry.Token}', which is not in the tokenizer's vocabulary ({path}).");
        }
        int? bos = Resolve(cfg.Bos, "BOS") ?? (spt.BeginningOfSentenceId >= 0 ? spt.BeginningOfSentenceId : null);
        int? eos = Resolve(cfg.Eos, "EOS") ?? (spt.EndOfSentenceId >= 0 ? spt.EndOfSentenceId : null);
        int? pad = Resolve(cfg.Pad, "PAD");
        var reverse = new Dictionary<int, string>();
        foreach (var kv in all) reverse.TryAdd(kv.Value, kv.Key);
        string? Name(SpecialTokenConfig.Entry? e, int? id) => e?.Token ?? (id is { } i && reverse.TryGetValue(i, out var t) ? t : null);
        var specialIds = cfg.AddedTokens.Where(t => t.Special).Select(t => t.Id).ToList();
        // split_special_tokens: the same model without the added special tokens.
        var plain = cfg.AddedTokens.Where(t => !t.Special).ToDictionary(t => t.Content, t => t.Id, StringComparer.Ordinal);
        Tokenizer? split = added.Count > plain.Count ? HfTokenizerLoader.LoadSentencePiece(path, plain).Tokenizer : null;
        int vocabSize = Math.Max(spt.Vocabulary.Count == 0 ? 0 : spt.Vocabulary.Values.Max() + 1, all.Count == 0 ? 0 : all.Values.Max() + 1);
        // LlamaTokenizer's defaults: add_bos_token true, add_eos_token false.
        return CausalLMTokenizer.Create(spt, vocabSize, bos, eos, pad, Name(cfg.Bos, bos), Name(cfg.Eos, eos), Name(cfg.Pad, pad),
            cfg.AddBosToken ?? true, cfg.AddEosToken ?? false, specialIds, all, path, split, cfg.SplitSpecialTokens ?? false);
    }
}
