using ML.Finetune.Models;
using ML.Finetune.Tests.Estimators;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Training;

public class ObjectiveTests
{
    static double D(Tensor t) => t.to_type(ScalarType.Float64).item<double>();

    /// <summary>Hand-computed masked mean: −log p(ids[b,t] | ids[b,&lt;t]) over positions with a label.</summary>
    static double HandMaskedMean(Tensor logits, long[,] ids, long[,] labels)
    {
        var lp = logits.to_type(ScalarType.Float64).log_softmax(-1);
        double sum = 0; int n = 0;
        for (int b = 0; b < ids.GetLength(0); b++)
            for (int t = 1; t < ids.GetLength(1); t++)
                if (labels[b, t] != -100) { sum -= lp[b, t - 1, ids[b, t]].item<double>(); n++; }
        return sum / n;
    }

    [Fact]
    public void PromptMask_PromptTokensConditionButAreNeverCounted()
    {
        using var scope = NewDisposeScope();
        var model = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        using var method = new FullFinetuneMethod();
        method.Attach(model, 0);
        var a = new EncodedExample(new long[] { 10, 11, 12, 13, 500, 501, 2 }, new long[] { -100, -100, -100, -100, 500, 501, 2 });
        var b = new EncodedExample(new long[] { 20, 21, 22, 600, 2 }, new long[] { -100, -100, -100, 600, 2 });
        var a2 = new EncodedExample(new long[] { 99, 98, 97, 96, 500, 501, 2 }, a.Labels); // different prompt, same completion
        double Ce(EncodedExample x, EncodedExample y, out double hand)
        {
            using var batch = FinetuneTrainer.Collate(new[] { x, y }, 0);
            var logits = method.Logits(model, batch.InputIds, batch.AttentionMask);
            var ids = new long[2, batch.InputIds.shape[1]]; var labels = new long[2, batch.InputIds.shape[1]];
            for (int r = 0; r < 2; r++) for (int t = 0; t < ids.GetLength(1); t++) { ids[r, t] = batch.InputIds[r, t].item<long>(); labels[r, t] = batch.Labels[r, t].item<long>(); }
            hand = HandMaskedMean(logits, ids, labels);
            return D(FinetuneObjective.CrossEntropy(logits, batch.Labels));
        }
        double ce1 = Ce(a, b, out double hand1), ce2 = Ce(a2, b, out double hand2);
        Assert.Equal(hand1, ce1, 1e-5);
        Assert.Equal(hand2, ce2, 1e-5);
        Assert.NotEqual(ce1, ce2, 1e-4); // the prompt conditions the completion
        // Counting: 5 targets (3 + 2), never a prompt position; labelling the prompt too changes the loss.
        using var bb = FinetuneTrainer.Collate(new[] { a, b }, 0);
        var (_, mask) = FinetuneObjective.TargetLogProbs(method.Logits(model, bb.InputIds, bb.AttentionMask), bb.Labels);
        Assert.Equal(5.0, D(mask.sum()));
        var all = bb.InputIds.masked_fill(bb.AttentionMask.eq(0), -100);
        Assert.NotEqual(ce1, D(FinetuneObjective.CrossEntropy(method.Logits(model, bb.InputIds, bb.AttentionMask), all)), 1e-3);
    }

    [Fact]
    public void L2AndKl_AreZeroAtPretrained_WithFiniteZeroGradients()
    {
        using var scope = NewDisposeScope();
        var model = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        using var method = new FullFinetuneMethod();
        method.Attach(model, 0);
        using var batch = FinetuneTrainer.Collate(new[] { new EncodedExample(new long[] { 5, 6, 7, 8 }, new long[] { -100, -100, 7, 8 }) }, 0);
        var refIds = Fixtures.Input("input_ids_right"); var refMask = Fixtures.Input("attention_mask_right");
        var terms = new FinetuneObjective(0.3, 0.5).Compute(method, model, batch, new ReferenceBatch(refIds, refMask));
        Assert.Equal(0.0, D(terms.L2));
        Assert.True(Math.Abs(D(terms.KL)) < 1e-6);
        var l2 = FinetuneObjective.SafeSqrt(method.DistanceFromPretrainedSquared());
        l2.backward();
        foreach (var (n, p) in method.TrainableParameters)
        {
            Assert.True(p.grad is null || D(p.grad.abs().max()) == 0, $"L2 gradient at θ_p must be exactly 0 ({n})");
        }
    }

    [Fact]
    public void L2Gradient_MatchesFiniteDifferences_InFloat64()
    {
        using var scope = NewDisposeScope();
        var model = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        model.to(ScalarType.Float64);
        using var method = new FullFinetuneMethod();
        method.Attach(model, 0);
        var (name, p) = method.TrainableParameters.First(x => x.Name.EndsWith("ln_f.weight"));
        var (_, w) = method.TrainableParameters.First(x => x.Name.EndsWith("c_attn.weight"));
        using (no_grad()) { p.add_(0.01); w[0, 0].add_(-0.02); }
        foreach (bool squared in new[] { false, true })
        {
            Tensor L() { var s = method.DistanceFromPretrainedSquared(); return squared ? s : FinetuneObjective.SafeSqrt(s); }
            p.grad?.zero_();
            L().backward();
            var g = p.grad!.clone();
            double h = 1e-6;
            foreach (int i in new[] { 0, 7, 63 })
            {
                double up, down;
                using (no_grad())
                {
                    p[i].add_(h); up = D(L());
                    p[i].add_(-2 * h); down = D(L());
                    p[i].add_(h);
                }
                Assert.Equal((up - down) / (2 * h), D(g[i]), 1e-7);
            }
        }
    }

    [Fact]
    public void KlGradient_MatchesFiniteDifferences_InFloat64()
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        var pLp = randn(2, 3, 7, dtype: ScalarType.Float64).log_softmax(-1);
        var logits = randn(2, 3, 7, dtype: ScalarType.Float64).requires_grad_(true);
        var mask = tensor(new long[] { 1, 1, 1, 1, 1, 0 }, new long[] { 2, 3 });
        FinetuneObjective.Kl(pLp, logits, mask).backward();
        var g = logits.grad!.clone();
        double h = 1e-6;
        foreach (var (b, t, v) in new[] { (0, 0, 0), (1, 1, 3), (0, 2, 6), (1, 2, 1) })
        {
            double up, down;
            using (no_grad())
            {
                logits[b, t, v].add_(h); up = D(FinetuneObjective.Kl(pLp, logits, mask));
                logits[b, t, v].add_(-2 * h); down = D(FinetuneObjective.Kl(pLp, logits, mask));
                logits[b, t, v].add_(h);
            }
            Assert.Equal((up - down) / (2 * h), D(g[b, t, v]), 1e-8);
        }
        Assert.Equal(0.0, D(g[1, 2].abs().max())); // masked position: no gradient
        // KL of a distribution with itself is 0.
        Assert.True(Math.Abs(D(FinetuneObjective.Kl(pLp, pLp, mask))) < 1e-12);
    }

    [Fact]
    public void ExampleEncoder_TruncatesThePromptFromTheLeft_NeverTheCompletion()
    {
        var tok = CausalLMTokenizer.FromFolder(TinyWordModel.Folder);
        var enc = new ExampleEncoder(tok, 6);
        long Id(string w) => tok.TokenToId(w)!.Value;
        var e = enc.Encode("the a is of where", "new haven");
        Assert.Equal(new[] { Id("of"), Id("where"), Id("new"), Id("haven"), enc.EosId, }.Prepend(Id("is")), e.InputIds);
        Assert.Equal(new long[] { -100, -100, -100, Id("new"), Id("haven"), enc.EosId }, e.Labels);
        var ex = Assert.Throws<ArgumentException>(() => enc.Encode("where", "new haven new haven new", row: 4, completionColumn: "Answer"));
        Assert.Contains("Row 5 (counting from 1)", ex.Message);
        Assert.Contains("'Answer'", ex.Message);
    }

    [Fact]
    public void Schedules_AndWeightDecayGroups()
    {
        var lin = new LearningRateSchedule(LearningRateScheduleKind.Linear, 2, 10);
        Assert.Equal(new[] { 0, 0.5, 1, 0.875 }, Enumerable.Range(0, 4).Select(lin.Factor).ToArray());
        Assert.Equal(0, lin.Factor(10));
        var cos = new LearningRateSchedule(LearningRateScheduleKind.Cosine, 0, 10);
        Assert.Equal(0.5, cos.Factor(5), 12);
        Assert.Equal(1, new LearningRateSchedule(LearningRateScheduleKind.Constant, 0, 10).Factor(9));
        using var scope = NewDisposeScope();
        Assert.True(FinetuneOptimizer.UsesWeightDecay("model.layers.0.self_attn.q_proj.weight", zeros(4, 4)));
        Assert.False(FinetuneOptimizer.UsesWeightDecay("model.layers.0.input_layernorm.weight", zeros(4)));
        Assert.False(FinetuneOptimizer.UsesWeightDecay("transformer.h.0.attn.c_attn.bias", zeros(4)));
        // AdamW: decoupled decay shrinks a 2-D weight even with zero gradient; a 1-D one is untouched.
        var w = ones(2, 2).requires_grad_(true); var n = ones(2).requires_grad_(true);
        w.sum().mul(0).add(n.sum().mul(0)).backward();
        var opt = new AdamW(new[] { ("w", w), ("norm.weight", n) }, weightDecay: 0.1);
        opt.Step(0.5);
        Assert.Equal(0.95, D(w[0, 0]), 6);
        Assert.Equal(1.0, D(n[0]), 6);
    }

    [Fact]
    public void Trainer_NaNLoss_ThrowsNamingTheStep()
    {
        using var scope = NewDisposeScope();
        var model = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        using var method = new FullFinetuneMethod();
        method.Attach(model, 0);
        var ex = new[] { new EncodedExample(new long[] { 5, 6, 7, 8 }, new long[] { -100, -100, 7, 8 }) };
        var trainer = new FinetuneTrainer(new TrainerOptions { MaxSteps = 5, LearningRate = 0.01, Optimizer = OptimizerKind.Sgd }, 0);
        // Inject: after step 1's update, poison one weight.
        trainer.GradientsReady = (step, ps) => { if (step == 1) using (no_grad()) ps[0].Parameter[0, 0].fill_(double.NaN); };
        var e = Assert.Throws<FinetuneDivergedException>(() => trainer.Train(model, method, ex));
        Assert.Equal(2, e.Step);
        Assert.Contains("step 2", e.Message);
    }

    [Fact]
    public void GradientAccumulation_EqualsTheBigBatch_AndClippingCapsTheNorm()
    {
        using var scope = NewDisposeScope();
        var ex = new[]
        {
            new EncodedExample(new long[] { 5, 6, 7, 8 }, new long[] { -100, -100, 7, 8 }),
            new EncodedExample(new long[] { 9, 10, 11, 12, 13 }, new long[] { -100, -100, -100, 12, 13 }),
        };
        var keepAlive = new List<CausalLM>(); // a collected module disposes its parameters
        Dictionary<string, Tensor> Train(int batch, int acc, double? clip)
        {
            var model = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
            keepAlive.Add(model);
            var method = new FullFinetuneMethod();
            method.Attach(model, 0);
            new FinetuneTrainer(new TrainerOptions
            {
                MaxSteps = 1, BatchSize = batch, GradientAccumulationSteps = acc, Shuffle = false, Optimizer = OptimizerKind.Sgd,
                LearningRate = 0.1, GradientClipNorm = clip,
            }, 0).Train(model, method, ex);
            return method.TrainableParameters.ToDictionary(p => p.Name, p => p.Parameter);
        }
        var big = Train(2, 1, null); var acc = Train(1, 2, null);
        foreach (var (n, p) in big) Assert.True(Fixtures.MaxAbsDiff(p, acc[n]) < 1e-6, n);
        GC.KeepAlive(keepAlive);
        // Clipping: every gradient is scaled by the same factor so that the global norm is the cap.
        using var _ = NewDisposeScope();
        var a = ones(3).requires_grad_(true); var b = ones(4).requires_grad_(true);
        a.sum().mul(3).add(b.sum().mul(4)).backward();          // grads 3·1₃ and 4·1₄: norm sqrt(27 + 64)
        double norm = FinetuneTrainer.ClipGradients(new[] { ("a", a), ("b", b) }, 1.0);
        Assert.Equal(Math.Sqrt(91), norm, 9);
        double after = Math.Sqrt(D(a.grad!.square().sum()) + D(b.grad!.square().sum()));
        Assert.Equal(1.0, after, 5);
    }
}
