using ML.Finetune.Models;
using ML.Finetune.Tests.Families;
using ML.Finetune.Tests.Shared;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;
using static ML.Finetune.Tests.Training.MemoryPathRuns;

namespace ML.Finetune.Tests.Training;

/// <summary>
/// Activation checkpointing (<see cref="CausalLM.GradientCheckpointing"/>, <see cref="LayerCheckpoint"/>): the same loss
/// and gradients as the plain forward for every family and method (prefix tuning's cached keys included), the same
/// dropout masks and random stream when dropout is on, and no effect without gradients.
/// </summary>
public class GradientCheckpointingTests
{
    static Tensor Loss(CausalLM m, IFinetuneMethod method, TrainingBatch batch) =>
        FinetuneObjective.CrossEntropy(m, method.HiddenStates(m, batch.InputIds, batch.AttentionMask), batch.Labels, chunkRows: 4);

    [Theory, MemberData(nameof(All), MemberType = typeof(MemoryPathRuns))]
    public void Checkpointing_GivesTheLossAndGradientsOfThePlainForward(string model, string method)
    {
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Folder(model), method);
        using var _m = m;
        using var batch = FinetuneTrainer.Collate(Examples(), 0);
        var plain = LossAndGrads(meth, () => Loss(m, meth, batch));
        m.GradientCheckpointing = true;
        long before = LayerCheckpoint.RecomputedOnThisThread;
        var checkpointed = LossAndGrads(meth, () => Loss(m, meth, batch));
        Assert.Equal(m.Config.NumLayers, LayerCheckpoint.RecomputedOnThisThread - before); // every layer was recomputed once
        Assert.Equal(plain.Loss, checkpointed.Loss, 1e-7);
        SameGradients(plain.Grads, checkpointed.Grads, atol: 1e-7, rtol: 1e-6, $"{model}/{method}");
        (meth as IDisposable)?.Dispose();
    }

    [Theory]
    [InlineData("gpt2", "full")]
    [InlineData("gpt2", "lora")]
    [InlineData("gpt2", "prefix")]
    [InlineData("phi3", "lora")]
    [InlineData("phi3", "prompt")]
    public void WithDropout_TheRecomputationDrawsTheSameMasks_AndTheRandomStreamContinuesAsWithout(string family, string method)
    {
        // Embedding, attention and residual dropout 0.2 (and LoRA dropout 0.2): a recomputation with other masks would
        // give other gradients.
        using var scope = NewDisposeScope();
        var config = family == "gpt2" ? TinyTrainingRun.Config : CausalLMConfig.Load(ArchFixtures.Model("tiny-phi3"));
        config = config with { ResidualDropout = 0.2, AttentionDropout = 0.2, EmbeddingDropout = 0.2, VocabSize = 1000, MaxPositionEmbeddings = Math.Max(64, config.MaxPositionEmbeddings) };
        using var m = CausalLMFactory.CreateRandom(config, 3);
        var meth = Make(method, loraDropout: 0.2);
        meth.Attach(m, 7);
        Nudge(meth, 0.02);
        m.train();
        using var batch = FinetuneTrainer.Collate(Examples(), 0);
        (double, Dictionary<string, Tensor>, float) Run(bool checkpoint, long seed)
        {
            m.GradientCheckpointing = checkpoint;
            manual_seed(seed);
            var r = LossAndGrads(meth, () => Loss(m, meth, batch));
            return (r.Loss, r.Grads, rand(1).item<float>());
        }
        var (plainLoss, plainGrads, plainNext) = Run(false, 21);
        var (ckLoss, ckGrads, ckNext) = Run(true, 21);
        Assert.Equal(plainLoss, ckLoss, 1e-7);
        SameGradients(plainGrads, ckGrads, atol: 1e-7, rtol: 1e-6, $"dropout {family}/{method}");
        Assert.Equal(plainNext, ckNext); // the stream after the step is where it is without checkpointing
        var (otherLoss, _, _) = Run(true, 22);
        Assert.NotEqual(plainLoss, otherLoss, 1e-6); // dropout is really on: another seed, other masks
        (meth as IDisposable)?.Dispose();
    }

    [Fact]
    public void Trainer_WithCheckpointing_TrainsTheSameRun()
    {
        // TinyTrainingRun: full finetuning with residual dropout 0.1, AdamW, 4 steps; then the run with checkpointing.
        using var scope = NewDisposeScope();
        (List<TrainingRecord> History, Dictionary<string, Tensor> Weights) Run(bool checkpointing)
        {
            var (m, meth) = TinyTrainingRun.Create();
            using var _m = m; using var _f = meth;
            var trainer = new FinetuneTrainer(new TrainerOptions
            {
                LearningRate = 1e-2, MaxSteps = 4, BatchSize = 4, Seed = 5, GradientCheckpointing = checkpointing, TuneMalloc = false,
            }, padId: 0);
            var h = trainer.Train(m, meth, TinyTrainingRun.Data(12, 3)).Records.ToList();
            Assert.False(m.GradientCheckpointing); // restored after training
            return (h, TinyTrainingRun.Weights(meth));
        }
        var plain = Run(false);
        long before = LayerCheckpoint.RecomputedOnThisThread;
        var checkpointed = Run(true);
        Assert.Equal(4 * TinyTrainingRun.Config.NumLayers, LayerCheckpoint.RecomputedOnThisThread - before);
        for (int s = 0; s < 4; s++)
        {
            Assert.Equal(plain.History[s].TrainLoss, checkpointed.History[s].TrainLoss, 1e-6);
            Assert.Equal(plain.History[s].GradNorm, checkpointed.History[s].GradNorm, 1e-5);
        }
        foreach (var (name, w) in plain.Weights) Assert.True(Fixtures.MaxAbsDiff(w, checkpointed.Weights[name]) < 1e-6, name);
    }

    [Fact]
    public void WithoutGradients_CheckpointingChangesNothing()
    {
        using var scope = NewDisposeScope();
        var (m, meth) = Create(Fixtures.Model("tiny-llama"), "lora");
        using var _m = m;
        using var batch = FinetuneTrainer.Collate(Examples(), 0);
        using var _ = no_grad();
        var plain = meth.Logits(m, batch.InputIds, batch.AttentionMask);
        m.GradientCheckpointing = true;
        var checkpointed = meth.Logits(m, batch.InputIds, batch.AttentionMask);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(plain, checkpointed));
        Assert.False(checkpointed.requires_grad);
    }
}
