using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using ML.Finetune.Estimators;
using ML.Finetune.Training;
using ML.Finetune.Transformers;

namespace ML.Finetune.Tests.Estimators;

/// <summary>What Fit tells its host: ML.NET progress channel and log lines, and the warnings a user must see.</summary>
public class FitReportingTests
{
    static LoraFinetuneOptions Options(string folder, int steps = 12) => new()
    {
        BaseModelPath = folder, MaxSteps = steps, BatchSize = 3, Seed = 3, LearningRate = 1e-2, Rank = 2, Alpha = 4,
        MaxSequenceLength = 16, NumberOfThreads = 1, Generation = { MaxNewTokens = 2 },
    };

    // ---------------------------------------------------------------- progress

    /// <summary>A host that listens to progress the way ML.NET's own hosts do: it gets every progress channel.</summary>
    sealed class ListeningEnvironment(IHostEnvironment inner) : IHost
    {
        public readonly List<RecordingChannel> Channels = new();
        public Random Rand { get; } = new(1);
        public IHost Register(string name, int? seed = null, bool? verbose = null) => this;
        public ComponentCatalog ComponentCatalog => inner.ComponentCatalog;
        public IChannel Start(string name) => inner.Start(name);
        public IPipe<TMessage> StartPipe<TMessage>(string name) => inner.StartPipe<TMessage>(name);
        public string ContextDescription => inner.ContextDescription;
        public TException Process<TException>(TException ex) where TException : Exception => inner.Process(ex);
        public IProgressChannel StartProgressChannel(string name)
        {
            var c = new RecordingChannel(name);
            lock (Channels) Channels.Add(c);
            return c;
        }
    }

    sealed class RecordingChannel(string name) : IProgressChannel
    {
        public string Name { get; } = name;
        public ProgressHeader? Header;
        public Action<IProgressEntry>? Fill;
        public readonly List<double?[]> Checkpoints = new();
        public bool Disposed;
        public void SetHeader(ProgressHeader header, Action<IProgressEntry> fillAction) { Header = header; Fill = fillAction; }
        public void Checkpoint(params double?[] values) => Checkpoints.Add(values);
        public IProgressChannel StartProgressChannel(string name) => new RecordingChannel(name);
        public void Dispose() => Disposed = true;
    }

    /// <summary>What a host's poll reads: progress (value, limit) per unit and the metrics.</summary>
    sealed class Entry : IProgressEntry
    {
        public readonly Dictionary<int, (double Value, double Lim)> Progress = new();
        public readonly Dictionary<int, double> Metrics = new();
        public void SetProgress(int index, double value) => Progress[index] = (value, double.NaN);
        public void SetProgress(int index, double value, double lim) => Progress[index] = (value, lim);
        public void SetMetric(int index, double value) => Metrics[index] = value;
    }

    [Fact]
    public void Fit_ReportsStepsTotalAndLoss_ThroughTheProgressChannel()
    {
        var ml = new MLContext(seed: 1);
        var host = new ListeningEnvironment(ml);
        var estimator = new LoraFinetuneEstimator(host, Options(TinyWordModel.Folder));
        var polled = new List<(Entry Entry, TrainingRecord Record)>();
        estimator.ProgressCallback = p =>
        {
            var e = new Entry();
            Assert.NotNull(host.Channels.Single().Fill); // the header is set before the first step
            host.Channels.Single().Fill!(e); // a host polling mid-training
            polled.Add((e, p.Record));
        };
        using var model = estimator.Fit(TinyWordModel.Data(ml));

        var channel = Assert.Single(host.Channels);
        Assert.Equal("Finetuning (lora)", channel.Name);
        Assert.Equal(new[] { "Loss", "Validation Loss" }, channel.Header!.MetricNames);
        Assert.Equal(new[] { "steps" }, channel.Header.UnitNames);
        Assert.True(channel.Disposed);

        var history = model.TrainingHistory.Records;
        Assert.Equal(12, polled.Count);
        for (int i = 0; i < 12; i++)
        {
            Assert.Equal((i + 1.0, 12.0), polled[i].Entry.Progress[0]);
            Assert.Equal(history[i].TrainLoss, polled[i].Entry.Metrics[0]);
        }
        // Checkpoints (kept by the host): the first, the 10th and the last step, [loss, validation loss, steps done, total].
        Assert.Equal(new[] { 1.0, 10, 12 }, channel.Checkpoints.Select(c => c[2]!.Value));
        Assert.All(channel.Checkpoints, c => Assert.Equal(12.0, c[3]));
        Assert.Equal(new[] { history[0].TrainLoss, history[9].TrainLoss, history[11].TrainLoss }, channel.Checkpoints.Select(c => c[0]!.Value));
        Assert.All(channel.Checkpoints, c => Assert.Null(c[1])); // no validation data
    }

    [Fact]
    public void Fit_WritesStepLinesToMLContextLog()
    {
        var ml = new MLContext(seed: 1);
        var infos = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == ChannelMessageKind.Info && e.RawMessage.StartsWith("step ")) lock (infos) infos.Add(e.RawMessage); };
        using var model = ml.Transforms.LoraFinetune(Options(TinyWordModel.Folder)).Fit(TinyWordModel.Data(ml));
        Assert.Equal(new[] { "step 1/12", "step 10/12", "step 12/12" }, infos.Select(m => m[..m.IndexOf(':')]));
    }

    // ---------------------------------------------------------------- warnings

    static (List<string> Callback, List<string> Log, MLContext Ml) Listen()
    {
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == ChannelMessageKind.Warning) lock (log) log.Add(e.RawMessage); };
        return (new List<string>(), log, ml);
    }

    static FinetuneTransformer Fit(MLContext ml, string folder, List<string> warnings, IEnumerable<TinyWordModel.Pair>? rows = null)
    {
        var estimator = ml.Transforms.LoraFinetune(Options(folder, steps: 2));
        estimator.WarningCallback = warnings.Add;
        return estimator.Fit(TinyWordModel.Data(ml, rows));
    }

    [Fact]
    public void TrainingDataFullOfUnknownWords_WarnsWithTheShareAndAWord()
    {
        var (warnings, log, ml) = Listen();
        // Word-level vocabulary of English place names: "où" and "est" are unknown, 2 of the 10 tokens (20.0%).
        var french = new[]
        {
            new TinyWordModel.Pair { Prompt = "où est harvard", Completion = "cambridge massachusetts" },
            new TinyWordModel.Pair { Prompt = "where is yale", Completion = "new haven" },
        };
        using (Fit(ml, TinyWordModel.Folder, warnings, french)) { }
        var w = Assert.Single(warnings);
        Assert.StartsWith("20.0% of the training tokens (2 of 10) map to the tokenizer's unknown token '<unk>', for example 'où' (", w);
        Assert.EndsWith("for example 'où' (training row 0 (0-based), column 'Prompt'): the model can neither read nor learn those words. " +
            "Use a tokenizer whose vocabulary covers the data (a byte-level BPE tokenizer has no unknown token).", w);
        Assert.Equal(warnings, log);

        // 1 unknown word in 31 tokens (3.2%) stays under the 5% threshold.
        warnings.Clear();
        using (Fit(ml, TinyWordModel.Folder, warnings, TinyWordModel.Facts.Append(new TinyWordModel.Pair { Prompt = "où", Completion = "durham" }))) { }
        Assert.Empty(warnings);
    }

    static string ModelCopy(Action<JsonObject> editConfig)
    {
        string dir = Fixtures.TempDir();
        foreach (var f in Directory.GetFiles(TinyWordModel.Folder)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        string config = Path.Combine(dir, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        editConfig(json);
        File.WriteAllText(config, json.ToJsonString());
        return dir;
    }

    [Fact]
    public void EosIdThatDisagreesWithConfigJson_Warns()
    {
        var (warnings, log, ml) = Listen();
        using (Fit(ml, TinyWordModel.Folder, warnings)) { }
        Assert.Empty(warnings); // the fixture's files agree

        string dir = ModelCopy(c => c["eos_token_id"] = 5);
        try
        {
            using (Fit(ml, dir, warnings)) { }
            var w = Assert.Single(warnings);
            Assert.StartsWith($"The tokenizer's eos token '</s>' has id 22, but '{Path.Combine(dir, "config.json")}' declares eos_token_id = 5.", w);
            Assert.Equal(warnings, log);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void SpecialIdAtOrAboveVocabSize_IsAnErrorNamingTheFileAndField()
    {
        int vocab = JsonNode.Parse(File.ReadAllText(Path.Combine(TinyWordModel.Folder, "config.json")))!["vocab_size"]!.GetValue<int>();
        string dir = ModelCopy(c => c["pad_token_id"] = vocab);
        try
        {
            var (warnings, _, ml) = Listen();
            var ex = Assert.Throws<InvalidDataException>(() => Fit(ml, dir, warnings));
            Assert.Equal($"'{Path.Combine(dir, "config.json")}': pad_token_id = {vocab} is not a token id of this model (vocab_size {vocab} in " +
                         $"'{Path.Combine(dir, "config.json")}'); ids must be below vocab_size.", ex.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
