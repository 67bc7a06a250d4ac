using System.Diagnostics;
using System.Text.Json;
using ML.Finetune.Models;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;
using TorchSharp;

namespace ML.Finetune.Samples.Experiment;

public sealed record PretrainOptions
{
    public int Seed { get; init; } = 1;
    public int Steps { get; init; } = 1500;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 2e-3;
    public int HiddenSize { get; init; } = 128;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;
    public int IntermediateSize { get; init; } = 384;
    public int CityTemplates { get; init; } = int.MaxValue;
    public bool QaFormat { get; init; } = true;
}

/// <summary>Builds θ_p: a word-level tokenizer over the facts' corpus and a small Llama pretrained on it from CreateRandom.</summary>
public static class Pretrainer
{
    public const string Unk = "<unk>", Bos = "<s>", Eos = "</s>", Pad = "<pad>";
    public const string InfoFile = "pretraining.json";

    /// <summary>The facts hash stored with a pretrained model folder, or null.</summary>
    public static string? StoredFactsHash(string folder)
    {
        string p = Path.Combine(folder, InfoFile);
        if (!File.Exists(p)) return null;
        using var doc = JsonDocument.Parse(File.ReadAllText(p));
        return doc.RootElement.TryGetProperty("facts_sha256", out var h) ? h.GetString() : null;
    }

    /// <summary>
    /// WordLevel tokenizer.json via the library writer, with the HF "Whitespace" pre-tokenizer (\w+|[^\w\s]+) instead of
    /// WhitespaceSplit, so raw text like "Q: Where is X? A:" tokenizes without our own normalisation; BOS added on encode.
    /// </summary>
    public static void WriteTokenizer(string folder, IReadOnlyList<string> vocab)
    {
        TokenizerFileWriter.WriteWordLevelTokenizerJson(folder, vocab, Unk, Bos, Eos, Pad, addBosToken: true);
        string path = Path.Combine(folder, "tokenizer.json");
        var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        root["pre_tokenizer"] = new System.Text.Json.Nodes.JsonObject { ["type"] = "Whitespace" };
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
    }

    public static CausalLMConfig Config(PretrainOptions o, CausalLMTokenizer tok) => new()
    {
        ModelType = "llama",
        VocabSize = tok.VocabSize,
        HiddenSize = o.HiddenSize,
        NumLayers = o.Layers,
        NumHeads = o.Heads,
        NumKeyValueHeads = o.Heads,
        HeadDim = o.HiddenSize / o.Heads,
        IntermediateSize = o.IntermediateSize,
        MaxPositionEmbeddings = 64,
        NormEps = 1e-5,
        TieWordEmbeddings = true,
        BosTokenId = tok.BosId,
        EosTokenIds = tok.EosId is int e ? [e] : [],
        PadTokenId = tok.PadId,
    };

    /// <summary>
    /// Pretrains and writes the HF folder into <paramref name="outFolder"/>, which must be new or empty (the CLI passes a
    /// staging folder and commits it). <paramref name="cancel"/> stops at a step boundary.
    /// </summary>
    public static (CausalLM model, TimeSpan elapsed) Run(FactCorpus facts, PretrainOptions o, string outFolder, Action<TrainingProgress>? progress = null,
        CancellationToken cancel = default)
    {
        if (Directory.Exists(outFolder) && Directory.EnumerateFileSystemEntries(outFolder).Any())
            throw new IOException($"{outFolder} is not empty; pretraining writes a new model folder");
        Directory.CreateDirectory(outFolder);
        var sw = Stopwatch.StartNew();
        var builder = new PretrainingCorpusBuilder(o.Seed, o.CityTemplates, o.QaFormat);
        var sentences = builder.Build(facts.Facts);
        WriteTokenizer(outFolder, PretrainingCorpusBuilder.Vocabulary(sentences, facts.Facts));
        var tok = CausalLMTokenizer.FromFolder(outFolder);
        var text = new LmText(tok);
        var model = CausalLMFactory.CreateRandom(Config(o, tok), o.Seed);
        try
        {
            // Pretraining is the library's finetuning loop with every token in the loss (plain next-token training).
            using var method = new FullFinetuneMethod();
            method.Attach(model, o.Seed);
            var trainer = new FinetuneTrainer(new TrainerOptions
            {
                MaxSteps = o.Steps, BatchSize = o.BatchSize, LearningRate = o.LearningRate, Schedule = LearningRateScheduleKind.Cosine,
                WarmupSteps = Math.Min(100, o.Steps / 10 + 1), WeightDecay = 0.01, GradientClipNorm = 1.0, Seed = o.Seed,
            }, text.Pad) { Progress = progress, CheckAlive = cancel.ThrowIfCancellationRequested };
            var hist = trainer.Train(model, method, sentences.Select(text.Sentence).Select(LmText.ToExample).ToList()).Records;
            CausalLMFactory.SavePretrained(model, outFolder);
            var info = new Dictionary<string, object>
            {
                ["facts_sha256"] = facts.Hash(),
                ["facts_count"] = facts.Facts.Count,
                ["seed"] = o.Seed, ["steps"] = o.Steps, ["batch_size"] = o.BatchSize, ["learning_rate"] = o.LearningRate,
                ["city_templates"] = builder.CityTemplateCount, ["qa_format_text"] = o.QaFormat,
                ["sentences"] = sentences.Count, ["parameters"] = model.parameters().Sum(p => p.numel()),
                ["final_loss"] = hist.Skip(Math.Max(0, hist.Count - 20)).Average(h => h.CrossEntropy),
                ["seconds"] = Math.Round(sw.Elapsed.TotalSeconds, 1),
            };
            File.WriteAllText(Path.Combine(outFolder, InfoFile), JsonSerializer.Serialize(info, new JsonSerializerOptions { WriteIndented = true }));
            return (model, sw.Elapsed);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public static IReadOnlyList<string> Sentences(FactCorpus facts, int seed) => new PretrainingCorpusBuilder(seed).Build(facts.Facts);
}
