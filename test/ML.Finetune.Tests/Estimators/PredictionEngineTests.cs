using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using ML.Finetune.Estimators;
using ML.Finetune.Tests.Foundation;
using ML.Finetune.Training;
using ML.Finetune.Transformers;

namespace ML.Finetune.Tests.Estimators;

/// <summary>mlContext.Model.CreatePredictionEngine on FinetuneTransformer: single rows give Transform's results.</summary>
public class PredictionEngineTests
{
    public sealed class Prediction
    {
        public string GeneratedText { get; set; } = "";
        public float Score { get; set; }
        public float ScorePerToken { get; set; }
    }

    public sealed class PromptOnly
    {
        public string Prompt { get; set; } = "";
    }

    public sealed class Question
    {
        public string Text { get; set; } = "";
        public string Completion { get; set; } = "";
    }

    static T Configure<T>(T o, double lr, int steps = 25) where T : FinetuneOptions
    {
        o.BaseModelPath = TinyWordModel.Folder; o.MaxSteps = steps; o.BatchSize = 6; o.Seed = 3; o.LearningRate = lr;
        o.Schedule = LearningRateScheduleKind.Constant; o.MaxSequenceLength = 16; o.NumberOfThreads = 1;
        o.Generation.MaxNewTokens = 5; o.Generation.BatchSize = 4; // Transform then mixes padded batches of 4 and 2
        return o;
    }

    internal static IEstimator<FinetuneTransformer> Estimator(MLContext ml, string method) => method switch
    {
        "full" => ml.Transforms.Finetune(Configure(new FullFinetuneOptions(), 3e-3)),
        "lora" => ml.Transforms.LoraFinetune(Configure(new LoraFinetuneOptions { Rank = 4, Alpha = 8 }, 3e-2, 60)),
        "prompt" => ml.Transforms.PromptTune(Configure(new PromptTuneOptions { NumVirtualTokens = 3, InitRange = 0.1 }, 0.2, 80)),
        "prefix" => ml.Transforms.PrefixTune(Configure(new PrefixTuneOptions { NumVirtualTokens = 3, InitStd = 0.5 }, 0.2, 80)),
        _ => throw new ArgumentOutOfRangeException(nameof(method)),
    };

    static readonly PredictionEngineOptions Shared = new() { OwnsTransformer = false };

    [Theory]
    [InlineData("full")]
    [InlineData("lora")]
    [InlineData("prompt")]
    [InlineData("prefix")]
    public void PredictionEngine_GivesTransformsResults_AlsoAfterLoadInAFreshProcess(string method)
    {
        var ml = new MLContext(seed: 1);
        var data = TinyWordModel.Data(ml);
        using var model = Estimator(ml, method).Fit(data);
        var transformed = model.Transform(data);
        var texts = transformed.GetColumn<string>("GeneratedText").ToList();
        var scores = transformed.GetColumn<float>("Score").ToList();
        var perToken = transformed.GetColumn<float>("ScorePerToken").ToList();
        Assert.Contains(texts, t => t.Length > 0);

        using var engine = ml.Model.CreatePredictionEngine<TinyWordModel.Pair, Prediction>(model, Shared);
        var predictions = TinyWordModel.Facts.Select(f => engine.Predict(f)).ToList();
        for (int i = 0; i < predictions.Count; i++)
        {
            Assert.Equal(texts[i], predictions[i].GeneratedText);
            Assert.True(Math.Abs(scores[i] - predictions[i].Score) <= 1e-4 * Math.Max(1, Math.Abs(scores[i])), $"row {i}: score {scores[i]} vs {predictions[i].Score}");
            Assert.True(Math.Abs(perToken[i] - predictions[i].ScorePerToken) <= 1e-4 * Math.Max(1, Math.Abs(perToken[i])), $"row {i}: per token {perToken[i]} vs {predictions[i].ScorePerToken}");
            Assert.True(predictions[i].Score < 0 && predictions[i].ScorePerToken < 0);
        }
        // Without a completion column the engine only generates.
        using var generateOnly = ml.Model.CreatePredictionEngine<PromptOnly, Prediction>(model, Shared);
        Assert.Equal(texts, TinyWordModel.Facts.Select(f => generateOnly.Predict(new PromptOnly { Prompt = f.Prompt }).GeneratedText));

        // Save, then a fresh process loads with mlContext.Model.Load and predicts row by row: bit-identical to this process.
        string dir = Fixtures.TempDir();
        try
        {
            string zip = Path.Combine(dir, "model.zip"), rows = Path.Combine(dir, "rows.json"), outJson = Path.Combine(dir, "out.json");
            ml.Model.Save(model, data.Schema, zip);
            File.WriteAllText(rows, JsonSerializer.Serialize(TinyWordModel.Facts));
            RunLoadProbe("predict", zip, rows, outJson);
            var fresh = JsonSerializer.Deserialize<List<Dictionary<string, string>>>(File.ReadAllText(outJson))!;
            // Text exactly; scores to float rounding (libtorch may pick other kernels for another thread count).
            Assert.Equal(predictions.Select(p => p.GeneratedText), fresh.Select(r => r["GeneratedText"]));
            for (int i = 0; i < predictions.Count; i++)
            {
                Assert.Equal(predictions[i].Score, FromBits(fresh[i]["Score"]), 1e-5 * Math.Abs(predictions[i].Score));
                Assert.Equal(predictions[i].ScorePerToken, FromBits(fresh[i]["ScorePerToken"]), 1e-5 * Math.Abs(predictions[i].ScorePerToken));
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    static float FromBits(string hex) => BitConverter.Int32BitsToSingle(Convert.ToInt32(hex, 16));

    [Fact]
    public void PredictionEngine_OverAChainOfRowToRowTransformers_ReadsThePromptTheChainMade()
    {
        var ml = new MLContext(seed: 1);
        var rows = TinyWordModel.Facts.Select(f => new Question { Text = f.Prompt, Completion = f.Completion }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        // The chain's output has a Text column besides Prompt and Completion: the format is named, since Auto would
        // (rightly) refuse to guess between prompt/completion and plain-text data.
        var lora = ml.Transforms.LoraFinetune(Configure(new LoraFinetuneOptions { Rank = 4, Alpha = 8, DataFormat = FinetuneDataFormat.PromptCompletion }, 3e-2, 60));
        using var chain = ml.Transforms.CopyColumns("Prompt", "Text").Append(lora).Fit(data);
        var expected = chain.Transform(data).GetColumn<string>("GeneratedText").ToList();
        using var engine = ml.Model.CreatePredictionEngine<Question, Prediction>(chain, Shared);
        Assert.Equal(expected, rows.Select(r => engine.Predict(r).GeneratedText));
    }

    [Fact]
    public void EnginesOnSeveralThreads_ShareOneModel_AndGiveTheSequentialResults()
    {
        var ml = new MLContext(seed: 1);
        using var model = Estimator(ml, "lora").Fit(TinyWordModel.Data(ml));
        Prediction[] Run(PredictionEngine<TinyWordModel.Pair, Prediction> e) => TinyWordModel.Facts.Select(f => e.Predict(f)).ToArray();
        Prediction[] expected;
        using (var e = ml.Model.CreatePredictionEngine<TinyWordModel.Pair, Prediction>(model, Shared)) expected = Run(e);

        var results = new Prediction[4][][];
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            using var engine = ml.Model.CreatePredictionEngine<TinyWordModel.Pair, Prediction>(model, Shared); // one engine per thread
            results[t] = Enumerable.Range(0, 3).Select(_ => Run(engine)).ToArray();
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        foreach (var round in results.SelectMany(r => r))
        {
            Assert.Equal(expected.Select(p => p.GeneratedText), round.Select(p => p.GeneratedText));
            Assert.Equal(expected.Select(p => p.Score), round.Select(p => p.Score));
        }
    }

    [Fact]
    public void AnEngineThatOwnsTheModel_DisposesIt_AndLaterUseSaysSo()
    {
        var ml = new MLContext(seed: 1);
        var model = Estimator(ml, "lora").Fit(TinyWordModel.Data(ml));
        using (var engine = ml.Model.CreatePredictionEngine<TinyWordModel.Pair, Prediction>(model)) // ML.NET's default: owns it
            Assert.NotNull(engine.Predict(TinyWordModel.Facts[0]).GeneratedText);
        Assert.Throws<ObjectDisposedException>(() => model.Generate(new[] { "where is yale" }));
        Assert.Throws<ObjectDisposedException>(() => model.Transform(TinyWordModel.Data(ml)));
        model.Dispose(); // idempotent
    }

    internal static void RunLoadProbe(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add(BuildInfo.LoadProbePath);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "the load probe did not finish in 2 minutes");
        Assert.True(p.ExitCode == 0, $"load probe failed ({p.ExitCode}): {stderr.Result}");
    }
}
