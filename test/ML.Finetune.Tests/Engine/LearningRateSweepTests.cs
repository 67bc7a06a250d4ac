using ML.Finetune.Estimators;
using ML.Finetune.Tests.Estimators;
using ML.Finetune.Training;
using Microsoft.ML;

namespace ML.Finetune.Tests.Engine;

public class LearningRateSweepTests
{
    static FullFinetuneEstimator Create(MLContext ml) => new(ml, new FullFinetuneOptions
    {
        BaseModelPath = TinyWordModel.Folder, BatchSize = 6, Schedule = LearningRateScheduleKind.Constant,
        MaxSequenceLength = 16, NumberOfThreads = 1, Generation = { MaxNewTokens = 4 },
    });

    [Fact]
    public void PicksTheLearningRateWithTheLowestValidationLossAndReportsRealLosses()
    {
        var ml = new MLContext(seed: 1);
        var facts = TinyWordModel.Facts;
        var train = TinyWordModel.Data(ml);
        var validation = TinyWordModel.Data(ml, facts.Take(4));
        string png = Path.Combine(Path.GetTempPath(), $"mlft-sweep-{Guid.NewGuid():N}.png");
        var options = new LearningRateSweepOptions
        {
            Candidates = [1e-5, 3e-3, 3e-2], StepsPerCandidate = 8, Seed = 2, PlotPath = png,
            Metric = (t, v) => t.TrainingHistory.Records.Count, MetricName = "steps",
        };
        using var result = LearningRateSweep.Run(() => Create(ml), train, validation, options);
        try
        {
            Assert.Equal(3, result.Rows.Count);
            var best = result.Rows.Where(r => double.IsFinite(r.ValidationLoss)).MinBy(r => r.ValidationLoss)!;
            Assert.Equal(best.LearningRate, result.BestLearningRate);
            Assert.Equal(best.ValidationLoss, result.BestTransformer.TrainingHistory.FinalValidationLoss);
            Assert.All(result.Rows, r => Assert.Equal(8, r.Metric));
            // A tiny lr barely moves the model: the sweep must not prefer it here.
            Assert.NotEqual(1e-5, result.BestLearningRate);
            // The table holds the real losses: an independent fit with the same seed reproduces a row exactly.
            var row = result.Rows[0];
            var est = Create(ml);
            est.Options.LearningRate = row.LearningRate; est.Options.MaxSteps = 8; est.Options.Seed = 2; est.Options.ValidationData = validation;
            using var again = est.Fit(train);
            Assert.Equal(row.ValidationLoss, again.TrainingHistory.FinalValidationLoss);
            Assert.True(new FileInfo(png).Length > 1000);
            Assert.Contains("learning_rate,validation_loss", result.ToTable());
        }
        finally { File.Delete(png); }
    }

    [Fact]
    public void DefaultCandidatesAreLogSpaced()
    {
        var c = new LearningRateSweepOptions { MinLearningRate = 1e-4, MaxLearningRate = 1e-1, Count = 4 }.ResolveCandidates();
        Assert.Equal(4, c.Count);
        for (int i = 0; i < 4; i++) Assert.Equal(Math.Pow(10, -4 + i), c[i], 12);
    }
}
