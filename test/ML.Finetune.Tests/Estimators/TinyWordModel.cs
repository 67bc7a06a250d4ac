using Microsoft.ML;
using ML.Finetune.Models;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Tests.Estimators;

/// <summary>A tiny random Llama with a word-level tokenizer, written as an HF folder, and a memorisation task.</summary>
internal static class TinyWordModel
{
    public sealed class Pair
    {
        public string Prompt { get; set; } = "";
        public string Completion { get; set; } = "";
    }

    public static readonly Pair[] Facts =
    {
        new() { Prompt = "where is harvard", Completion = "cambridge massachusetts" },
        new() { Prompt = "where is yale", Completion = "new haven" },
        new() { Prompt = "where is stanford", Completion = "palo alto" },
        new() { Prompt = "where is princeton", Completion = "princeton new jersey" },
        new() { Prompt = "where is rice", Completion = "houston" },
        new() { Prompt = "where is duke", Completion = "durham" },
    };

    static readonly object Lock = new();
    static string? _folder;

    /// <summary>Created once per test run (the folder is read-only for tests).</summary>
    public static string Folder
    {
        get
        {
            lock (Lock) return _folder ??= Create(Fixtures.TempDir(), seed: 7);
        }
    }

    public static string Create(string folder, long seed)
    {
        var words = Facts.SelectMany(f => (f.Prompt + " " + f.Completion).Split(' ')).Concat(new[] { "the", "a", "is", "of" })
            .Distinct().OrderBy(w => w, StringComparer.Ordinal).ToList();
        TokenizerFileWriter.WriteWordLevelTokenizerJson(folder, words, "<unk>", bosToken: "<s>", eosToken: "</s>", padToken: "<pad>");
        var tok = CausalLMTokenizer.FromFolder(folder);
        var config = new CausalLMConfig
        {
            ModelType = "llama", VocabSize = tok.VocabSize, HiddenSize = 32, NumLayers = 2, NumHeads = 4, NumKeyValueHeads = 2, HeadDim = 8,
            IntermediateSize = 64, MaxPositionEmbeddings = 64, NormEps = 1e-6, EosTokenIds = new[] { (long)tok.EosId!.Value },
            PadTokenId = tok.PadId, BosTokenId = tok.BosId,
        };
        using var model = CausalLMFactory.CreateRandom(config, seed);
        CausalLMFactory.SavePretrained(model, folder);
        return folder;
    }

    public static IDataView Data(MLContext ml, IEnumerable<Pair>? rows = null) => ml.Data.LoadFromEnumerable(rows ?? Facts);
}
