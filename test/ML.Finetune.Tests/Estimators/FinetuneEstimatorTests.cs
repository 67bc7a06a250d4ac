using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using ML.Finetune.Estimators;
using ML.Finetune.Testing;
using ML.Finetune.Tests.Foundation;
using ML.Finetune.Training;
using ML.Finetune.Transformers;

namespace ML.Finetune.Tests.Estimators;

public class FinetuneEstimatorTests
{
    static FullFinetuneOptions Options(int steps, double lr = 3e-3) => new()
    {
        BaseModelPath = TinyWordModel.Folder, MaxSteps = steps, LearningRate = lr, BatchSize = 6, Seed = 3,
        Schedule = LearningRateScheduleKind.Constant, MaxSequenceLength = 16, NumberOfThreads = 1, Generation = { MaxNewTokens = 6 },
    };

    static List<string> Column(IDataView data, string name) => data.GetColumn<string>(name).ToList();

    [Fact]
    public void FullFinetuning_LearnsTheFacts_AndGeneratesThem()
    {
        var ml = new MLContext(seed: 1);
        var data = TinyWordModel.Data(ml);
        var sw = Stopwatch.StartNew();
        using var model = ml.Transforms.Finetune(Options(200)).Fit(data);
        double seconds = sw.Elapsed.TotalSeconds;
        var h = model.TrainingHistory.Records;
        Assert.Equal(200, h.Count);
        Assert.True(h[^1].CrossEntropy < 0.05 && h[0].CrossEntropy > 1, $"CE {h[0].CrossEntropy} → {h[^1].CrossEntropy}");
        Assert.True(h[^1].Distance > 0);
        var transformed = model.Transform(data);
        Assert.Equal(TinyWordModel.Facts.Select(f => f.Completion), Column(transformed, "GeneratedText"));
        var metrics = ml.Finetune().Evaluate(transformed);
        Assert.Equal(1.0, metrics.ExactMatchAccuracy);
        Assert.True(metrics.MeanNll < 0.1 && metrics.Perplexity < 1.11, $"nll {metrics.MeanNll}");
        // Stop strings cut the text; seeded sampling is reproducible.
        var stop = new FinetuneTransformer(null, model.Model, model.Tokenizer, model.Method, model.Settings with { StopStrings = new[] { " haven" } },
            model.TrainingHistory, model.BaseModel, new());
        Assert.Equal(new[] { "new", "houston" }, stop.Generate(new[] { "where is yale", "where is rice" }));
        var sampler = new FinetuneTransformer(null, model.Model, model.Tokenizer, model.Method, model.Settings with { Temperature = 1.5, TopK = 3, TopP = 0.9, GenerationSeed = 4 },
            model.TrainingHistory, model.BaseModel, new());
        var prompts = TinyWordModel.Facts.Select(f => f.Prompt).ToList();
        Assert.Equal(sampler.Generate(prompts), sampler.Generate(prompts));
        Console.WriteLine($"[measure] tiny llama full finetuning: {200 / seconds:F1} steps/s (batch 6)");
    }

    [Fact]
    public void SameSeed_GivesIdenticalRuns()
    {
        var ml = new MLContext(seed: 1);
        var data = TinyWordModel.Data(ml);
        string Run()
        {
            var o = Options(15); o.Optimizer = OptimizerKind.AdamW; o.WeightDecay = 0.1; o.BatchSize = 4; o.GradientClipNorm = 0.5;
            using var m = ml.Transforms.Finetune(o).Fit(data);
            var t = m.Transform(data);
            return m.TrainingHistory.ToCsv() + string.Join("|", Column(t, "GeneratedText")) + string.Join("|", t.GetColumn<float>("Score"));
        }
        Assert.Equal(Run(), Run());
    }

    [Fact]
    public void ValidationLoss_IsRecordedEveryNSteps()
    {
        var ml = new MLContext(seed: 1);
        var o = Options(6); o.ValidationData = TinyWordModel.Data(ml, TinyWordModel.Facts.Take(2)); o.EvaluateEveryNSteps = 2;
        using var m = ml.Transforms.Finetune(o).Fit(TinyWordModel.Data(ml));
        var val = m.TrainingHistory.Records.Select(r => !double.IsNaN(r.ValLoss)).ToArray();
        Assert.Equal(new[] { false, true, false, true, false, true }, val);
        string dir = Fixtures.TempDir(), png = Path.Combine(dir, "loss.png"), csv = Path.Combine(dir, "loss.csv");
        m.TrainingHistory.SaveLossPlot(png);
        m.TrainingHistory.WriteCsv(csv);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(png).Take(4).ToArray());
        Assert.Equal(7, File.ReadAllLines(csv).Length);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Pipeline_WithStandardTransformsAround_SavesAndLoadsInAFreshProcess()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(TinyWordModel.Facts.Select(f => new { Question = f.Prompt, f.Completion }).ToList());
        var o = Options(40);
        var pipeline = ml.Transforms.CopyColumns("Prompt", "Question")
            .Append(ml.Transforms.Finetune(o))
            .Append(ml.Transforms.CopyColumns("Answer", "GeneratedText"))
            .Append(ml.Transforms.Concatenate("Scores", "Score", "ScorePerToken"));
        var chain = pipeline.Fit(data);
        string expected = DataViewDump.ToJson(chain.Transform(data));
        Assert.Contains("Answer", expected);
        string dir = Fixtures.TempDir();
        try
        {
            string zip = Path.Combine(dir, "model.zip"), idv = Path.Combine(dir, "input.idv"), outJson = Path.Combine(dir, "out.json");
            ml.Model.Save(chain, data.Schema, zip);
            using (var fs = File.Create(idv)) ml.Data.SaveAsBinary(data, fs);
            PersistenceRoundTripTests.RunProbe(zip, idv, outJson);
            Assert.Equal(expected, File.ReadAllText(outJson));
            // Also in-process, and the loaded transformer keeps its history.
            var loaded = ml.Model.Load(zip, out _);
            Assert.Equal(expected, DataViewDump.ToJson(loaded.Transform(data)));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void MissingOrNonTextColumns_AreNamed()
    {
        var ml = new MLContext();
        var noCompletion = ml.Data.LoadFromEnumerable(new[] { new { Prompt = "where is yale" } });
        var e1 = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Finetune(Options(1)).Fit(noCompletion));
        Assert.Contains("'Completion'", e1.Message);
        Assert.Contains("Text", e1.Message);
        var numeric = ml.Data.LoadFromEnumerable(new[] { new { Prompt = 1.5f, Completion = "x" } });
        var e2 = Assert.Throws<ArgumentException>(() => ml.Transforms.Finetune(Options(1)).Fit(numeric));
        Assert.Contains("'Prompt'", e2.Message);
        Assert.Contains("expected Text", e2.Message);
    }

    [Fact]
    public void MaxSequenceLength_IsCappedAtTheModelContext_SoAnOverlongCompletionIsNamedNotSilentlyTrained()
    {
        var ml = new MLContext();
        // The tiny model's context is 64 positions; 40 × "new haven" is 80 completion tokens.
        var rows = new[] { TinyWordModel.Facts[0], new TinyWordModel.Pair { Prompt = "where is yale", Completion = string.Join(" ", Enumerable.Repeat("new haven", 40)) } };
        var o = Options(1); o.MaxSequenceLength = 512;
        var e = Assert.Throws<ArgumentException>(() => ml.Transforms.Finetune(o).Fit(TinyWordModel.Data(ml, rows)));
        Assert.Contains("Row 2 (counting from 1)", e.Message);
        Assert.Contains("MaxSequenceLength 64", e.Message);
    }

    [Fact]
    public void EmptyData_CompletionTooLong_AndMissingBase_HaveClearErrors()
    {
        var ml = new MLContext();
        var empty = TinyWordModel.Data(ml, Array.Empty<TinyWordModel.Pair>());
        var e1 = Assert.Throws<InvalidOperationException>(() => ml.Transforms.Finetune(Options(1)).Fit(empty));
        Assert.Contains("training data", e1.Message);
        var longRow = new[] { TinyWordModel.Facts[0], new TinyWordModel.Pair { Prompt = "where is yale", Completion = string.Join(" ", Enumerable.Repeat("new haven", 10)) } };
        var e2 = Assert.Throws<ArgumentException>(() => ml.Transforms.Finetune(Options(1)).Fit(TinyWordModel.Data(ml, longRow)));
        Assert.Contains("Row 2 (counting from 1)", e2.Message);
        Assert.Contains("'Completion'", e2.Message);
        var o = Options(1); o.BaseModelPath = Path.Combine(Path.GetTempPath(), "no-such-model-" + Guid.NewGuid());
        var e3 = Assert.Throws<DirectoryNotFoundException>(() => ml.Transforms.Finetune(o).Fit(TinyWordModel.Data(ml)));
        Assert.Contains(o.BaseModelPath, e3.Message);
    }

    [Fact]
    public void DivergingLoss_StopsWithTheStep_AndProducesNoModel()
    {
        var ml = new MLContext();
        var o = Options(20, lr: 1e30); o.GradientClipNorm = null; o.Optimizer = OptimizerKind.Sgd;
        string dir = Fixtures.TempDir();
        FinetuneTransformer? model = null;
        var e = Assert.Throws<FinetuneDivergedException>(() => { model = ml.Transforms.Finetune(o).Fit(TinyWordModel.Data(ml)); ml.Model.Save(model, null, Path.Combine(dir, "m.zip")); });
        Assert.Null(model);
        Assert.True(e.Step >= 1);
        Assert.Contains($"step {e.Step}", e.Message);
        Assert.Empty(Directory.GetFiles(dir));
    }

    [Fact]
    public void BaseModelReference_MissingMovedOrChanged()
    {
        var folder = TinyWordModel.Create(Fixtures.TempDir(), seed: 11);
        var reference = BaseModelReference.Of(folder);
        Assert.Equal(folder, FinetuneTransformer.ResolveBaseModel(reference));
        // Moved: not found, then found through the search paths.
        string parent = Fixtures.TempDir(), moved = Path.Combine(parent, Path.GetFileName(folder));
        Directory.Move(folder, moved);
        var e1 = Assert.Throws<FileNotFoundException>(() => FinetuneTransformer.ResolveBaseModel(reference));
        Assert.Contains(folder, e1.Message);
        Assert.Contains(FinetuneTransformer.BaseModelDirVariable, e1.Message);
        lock (FinetuneTransformer.BaseModelSearchPaths)
        {
            FinetuneTransformer.BaseModelSearchPaths.Add(parent);
            try
            {
                Assert.Equal(moved, FinetuneTransformer.ResolveBaseModel(reference));
                // Changed weights: the hash no longer matches.
                var bytes = File.ReadAllBytes(Path.Combine(moved, "model.safetensors"));
                bytes[^1] ^= 0x55;
                File.WriteAllBytes(Path.Combine(moved, "model.safetensors"), bytes);
                var e2 = Assert.Throws<InvalidDataException>(() => FinetuneTransformer.ResolveBaseModel(reference));
                Assert.Contains(moved, e2.Message);
                Assert.Contains(reference.WeightSha256.Values.First(), e2.Message);
            }
            finally { FinetuneTransformer.BaseModelSearchPaths.Remove(parent); }
        }
    }

    [Fact]
    public void Cancellation_ThroughMLContext_StopsTraining()
    {
        var ml = new MLContext();
        var est = ml.Transforms.Finetune(Options(50));
        int seen = 0;
        est.ProgressCallback = p => { seen++; if (p.Record.Step == 2) ML.Finetune.Persistence.HostAccess.CancelExecution(ml); };
        Assert.ThrowsAny<OperationCanceledException>(() => est.Fit(TinyWordModel.Data(ml)));
        Assert.Equal(3, seen);
    }

    [Fact]
    public void FullyFinetunedModel_IsSelfContained_LoadsWithoutTheBase()
    {
        var ml = new MLContext(seed: 1);
        string baseDir = TinyWordModel.Create(Fixtures.TempDir(), seed: 5), dir = Fixtures.TempDir();
        var o = Options(20); o.BaseModelPath = baseDir; o.DType = FinetuneDType.BFloat16;
        var data = TinyWordModel.Data(ml);
        using var model = ml.Transforms.Finetune(o).Fit(data);
        Assert.True(model.IsSelfContained);
        var expected = DataViewDump.ToJson(model.Transform(data));
        string zip = Path.Combine(dir, "m.zip");
        ml.Model.Save(model, data.Schema, zip);
        Directory.Delete(baseDir, true);
        var loaded = (FinetuneTransformer)ml.Model.Load(zip, out _);
        Assert.Equal(expected, DataViewDump.ToJson(loaded.Transform(data)));
        Assert.Equal(model.TrainingHistory.ToCsv(), loaded.TrainingHistory.ToCsv());
        Assert.Equal(FinetuneDType.BFloat16, loaded.Settings.DType);
        Directory.Delete(dir, true);
    }
}
