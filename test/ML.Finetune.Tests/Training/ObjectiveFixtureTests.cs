using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Training;

/// <summary>The objective and the loop against the HF reference trajectory (Fixtures/README.md, "Full-finetuning objective").</summary>
public class ObjectiveFixtureTests
{
    const string CAttn = "transformer.h.0.attn.c_attn.weight", LnF = "transformer.ln_f.weight";

    static Tensor Obj(string name) => Fixtures.Ref("tiny-gpt2-objective", name);

    static List<EncodedExample> RightBatchExamples()
    {
        var ids = Fixtures.Input("input_ids_right"); var mask = Fixtures.Input("attention_mask_right"); var labels = Fixtures.Input("labels_right");
        var list = new List<EncodedExample>();
        for (int b = 0; b < ids.shape[0]; b++)
        {
            int len = (int)mask[b].sum().item<long>();
            list.Add(new EncodedExample(ids[b, ..len].data<long>().ToArray(), labels[b, ..len].data<long>().ToArray()));
        }
        return list;
    }

    [Fact]
    public void Step0CrossEntropy_EqualsHfLossRight()
    {
        using var scope = NewDisposeScope();
        var model = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        using var method = new FullFinetuneMethod();
        method.Attach(model, 0);
        var logits = method.Logits(model, Fixtures.Input("input_ids_right"), Fixtures.Input("attention_mask_right"));
        double ce = FinetuneObjective.CrossEntropy(logits, Fixtures.Input("labels_right")).item<float>();
        Assert.Equal(Fixtures.Ref("tiny-gpt2", "loss_right").item<float>(), ce, 1e-5);
        // The collated batch is the fixture batch itself.
        using var batch = FinetuneTrainer.Collate(RightBatchExamples(), 0);
        Assert.True(batch.InputIds.equal(Fixtures.Input("input_ids_right")).all().item<bool>());
        Assert.True(batch.Labels.equal(Fixtures.Input("labels_right")).all().item<bool>());
    }

    [Fact]
    public void FullFinetuningTrajectory_ReproducesHfReference()
    {
        using var scope = NewDisposeScope();
        var model = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        using var method = new FullFinetuneMethod();
        method.Attach(model, 0);
        Assert.Equal(172_288, method.TrainableParameters.Sum(p => p.Parameter.numel()));
        var refIds = Obj("ref_text_ids");
        var refTexts = Enumerable.Range(0, (int)refIds.shape[0]).Select(b => refIds[b].data<long>().ToArray()).ToList();
        var trainer = new FinetuneTrainer(new TrainerOptions
        {
            Optimizer = OptimizerKind.Sgd, LearningRate = 0.05, MaxSteps = 4, BatchSize = 2, Shuffle = false,
            L2Penalty = 0.3, KlPenalty = 0.5, Schedule = LearningRateScheduleKind.Constant,
        }, padId: 0);
        var grads = new Dictionary<string, Tensor>();
        trainer.GradientsReady = (step, ps) =>
        {
            if (step > 1) return;
            foreach (var (n, p) in ps)
                if (n is CAttn or LnF) { var g = p.grad!.detach().clone(); g.DetachFromDisposeScope(); grads[$"grad_step{step}.{n}"] = g; }
        };
        var history = trainer.Train(model, method, RightBatchExamples(), referenceTexts: refTexts);

        var ce = Obj("ce").data<float>().ToArray(); var l2 = Obj("l2").data<float>().ToArray();
        var kl = Obj("kl").data<float>().ToArray(); var total = Obj("total").data<float>().ToArray();
        var gn = Obj("grad_norm").data<float>().ToArray();
        for (int s = 0; s < 4; s++)
        {
            var r = history.Records[s];
            Assert.Equal(ce[s], r.CrossEntropy, 1e-4);
            Assert.Equal(l2[s], r.L2, 1e-4);
            Assert.Equal(kl[s], r.KL, 1e-4);
            Assert.Equal(total[s], r.TrainLoss, 1e-4);
            Assert.Equal(gn[s], r.GradNorm, 1e-3);
            Assert.Equal(l2[s], r.Distance, 1e-4);
        }
        // After step 4: evaluate the objective once more.
        using (no_grad())
        {
            using var batch = FinetuneTrainer.Collate(RightBatchExamples(), 0);
            var objective = new FinetuneObjective(0.3, 0.5);
            var freshRef = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
            var refLp = freshRef.Forward(new CausalLMInput { InputIds = refIds }).Logits.log_softmax(-1);
            // p_θp on the fly, from the method's frozen θ_p copy
            var terms = objective.Compute(method, model, batch, new ReferenceBatch(refIds, ones_like(refIds)));
            Assert.Equal(ce[4], terms.CrossEntropy.item<float>(), 1e-4);
            Assert.Equal(l2[4], terms.L2.item<float>(), 1e-4);
            Assert.Equal(kl[4], terms.KL.item<float>(), 1e-4);
            Assert.Equal(total[4], terms.Total.item<float>(), 1e-4);
            var perPos = FinetuneObjective.KlPerPosition(refLp, method.Logits(model, refIds, ones_like(refIds)));
            Assert.True(Fixtures.MaxAbsDiff(perPos, Obj("kl_per_position")[4]) < 1e-4);
        }
        foreach (var step in new[] { 0, 1 })
        {
            Assert.True(Fixtures.MaxAbsDiff(grads[$"grad_step{step}.{CAttn}"].t(), Obj($"grad_step{step}.{CAttn}")) < 1e-4, $"grad_step{step} c_attn");
            Assert.True(Fixtures.MaxAbsDiff(grads[$"grad_step{step}.{LnF}"], Obj($"grad_step{step}.{LnF}")) < 1e-4, $"grad_step{step} ln_f");
        }
        var final = method.TrainableParameters.ToDictionary(p => p.Name, p => p.Parameter);
        Assert.True(Fixtures.MaxAbsDiff(final[CAttn].t(), Obj($"final.{CAttn}")) < 1e-5);
        Assert.True(Fixtures.MaxAbsDiff(final[LnF], Obj($"final.{LnF}")) < 1e-5);
    }
}
