using ML.Finetune.Tests.Shared;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Engine;

public class EarlyStoppingTests
{
    [Fact]
    public void StopsWhenValidationStopsImprovingAndKeepsTheBestWeights()
    {
        using var scope = NewDisposeScope();
        var (model, method) = TinyTrainingRun.Create();
        // A high learning rate on 8 training rows over-fits quickly: the validation loss (other rows) turns up.
        var trainer = new FinetuneTrainer(new TrainerOptions
        {
            LearningRate = 3e-2, BatchSize = 4, MaxSteps = 200, Seed = 3, EvaluateEveryNSteps = 2, EarlyStoppingPatience = 3,
        }, padId: 0);
        Dictionary<string, Tensor>? bestSeen = null; double bestVal = double.PositiveInfinity;
        trainer.Progress = p =>
        {
            if (!double.IsNaN(p.Record.ValLoss) && p.Record.ValLoss < bestVal)
            {
                bestVal = p.Record.ValLoss;
                foreach (var t in bestSeen?.Values ?? Enumerable.Empty<Tensor>()) t.Dispose();
                bestSeen = TinyTrainingRun.Weights(method);
                foreach (var t in bestSeen.Values) t.DetachFromDisposeScope();
            }
        };
        var validation = TinyTrainingRun.Data(16, 2);
        var history = trainer.Train(model, method, TinyTrainingRun.Data(8, 1), validation);

        Assert.NotNull(history.EarlyStoppedAtStep);
        Assert.True(history.EarlyStoppedAtStep < 199, "should stop well before MaxSteps");
        var evals = history.Records.Where(r => !double.IsNaN(r.ValLoss)).ToList();
        double best = evals.Min(r => r.ValLoss);
        Assert.Equal(best, history.BestValidationLoss);
        Assert.Equal(evals.First(r => r.ValLoss == best).Step, history.BestStep);
        // The last 3 evaluations did not improve on the best.
        Assert.All(evals.TakeLast(3), r => Assert.True(r.ValLoss >= best));
        Assert.True(evals[^1].ValLoss > best);
        // The model ends with the best evaluation's weights and its validation loss.
        foreach (var (name, p) in method.TrainableParameters) Assert.True(p.eq(bestSeen![name]).all().item<bool>(), $"{name} is not the best weights");
        Assert.Equal(best, trainer.ValidationLoss(model, method, validation), 6);
    }
}
