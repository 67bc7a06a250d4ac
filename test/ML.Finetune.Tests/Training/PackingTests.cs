using ML.Finetune.Adapters;
using ML.Finetune.Models;
using ML.Finetune.Tests.Families;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Training;

/// <summary>
/// Sequence packing is exact: the same examples packed into rows (<see cref="SequencePacker"/>, collated with restarting
/// positions and block-diagonal attention) give the unpacked batch's loss and gradients within 1e-5, for every method
/// (prompt and prefix tuning put their virtual tokens in front of every packed sequence) on a Llama, a sliding-window
/// Mistral (window 4, shorter than the sequences, and a prefix that slides out of it) and GPT-2 (learned positions).
/// </summary>
public class PackingTests
{
    public static TheoryData<string, string> Runs()
    {
        var d = new TheoryData<string, string>();
        foreach (var model in new[] { "tiny-llama", "tiny-mistral-sw", "tiny-gpt2" })
            foreach (var method in new[] { "full", "lora", "prompt", "prefix" })
                d.Add(model, method);
        return d;
    }

    static string Folder(string model) => model == "tiny-mistral-sw" ? ArchFixtures.Extra(model) : Fixtures.Model(model);

    static IFinetuneMethod Make(string method) => method switch
    {
        "full" => new FullFinetuneMethod(),
        "lora" => new LoraMethod(new LoraConfig { Rank = 4, Alpha = 8, TargetModules = [LoraConfig.AllLinear] }),
        "prompt" => new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 4, InitRange = 0.5 }),
        _ => new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 3, InitStd = 0.5 }),
    };

    /// <summary>Nine examples of 3..13 tokens: a prompt (label −100) then a trained completion.</summary>
    internal static List<EncodedExample> Examples(int seed = 11, int count = 9)
    {
        var r = new Random(seed);
        var list = new List<EncodedExample>();
        for (int i = 0; i < count; i++)
        {
            int n = r.Next(3, 14), prompt = r.Next(1, n - 1);
            var ids = Enumerable.Range(0, n).Select(_ => (long)r.Next(3, 1000)).ToArray();
            list.Add(new EncodedExample(ids, ids.Select((id, j) => j < prompt ? FinetuneObjective.IgnoreIndex : id).ToArray()));
        }
        return list;
    }

    static (double Loss, Dictionary<string, Tensor> Grads) LossAndGradients(CausalLM m, IFinetuneMethod method, IReadOnlyList<EncodedExample> batch,
        long targets, bool dropLayout = false)
    {
        foreach (var (_, p) in method.TrainableParameters) p.grad?.zero_();
        using var b = FinetuneTrainer.Collate(batch, 0);
        var loss = FinetuneObjective.CrossEntropy(method.Logits(m, b.InputIds, b.AttentionMask, dropLayout ? null : b.Packing), b.Labels, targets);
        loss.backward();
        var grads = method.TrainableParameters.ToDictionary(p => p.Name, p => p.Parameter.grad!.detach().clone());
        return (loss.item<float>(), grads);
    }

    [Theory, MemberData(nameof(Runs))]
    public void PackedLossAndGradients_EqualUnpacked(string model, string methodName)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Folder(model));
        m.eval(); // no dropout: the two batches must compute the same function
        var method = Make(methodName);
        method.Attach(m, 5);
        if (method is LoraMethod)
            using (no_grad()) // B starts at 0 (then A has no gradient): give both factors a gradient to compare
                foreach (var (name, p) in method.TrainableParameters.Where(p => p.Name.EndsWith(".B")))
                    p.copy_(torch.randn(p.shape, generator: new Generator(3)).mul(0.1));
        var examples = Examples();
        var packed = SequencePacker.Pack(examples, 16);
        Assert.True(packed.Count < examples.Count && packed.Count(r => r.IsPacked) >= 2, $"{packed.Count} rows");
        long targets = FinetuneObjective.CountTargets(examples);
        Assert.Equal(targets, FinetuneObjective.CountTargets(packed));

        var (lossU, gradU) = LossAndGradients(m, method, examples, targets);
        var (lossP, gradP) = LossAndGradients(m, method, packed, targets);
        Assert.True(Math.Abs(lossU - lossP) < 1e-5, $"{model}/{methodName}: loss unpacked {lossU} packed {lossP}");
        double worst = gradU.Keys.Max(k => Fixtures.MaxAbsDiff(gradU[k], gradP[k]));
        double scale = gradU.Values.Max(g => g.abs().max().item<float>());
        Assert.True(scale > 1e-4, "the gradients must not be trivially zero");
        Assert.True(worst < 1e-5, $"{model}/{methodName}: gradients differ by {worst:E2} (largest gradient {scale:E2})");

        // The same rows without their layout let sequences see each other: the test can tell.
        var (lossMixed, _) = LossAndGradients(m, method, packed, targets, dropLayout: true);
        Assert.True(Math.Abs(lossMixed - lossU) > 1e-4, $"{model}/{methodName}: cross-contaminated rows gave the same loss");
    }

    [Fact]
    public void Packer_FillsRowsBestFitDecreasing_AndNeverCrossesABoundary()
    {
        var lengths = new[] { 9, 3, 7, 5, 2, 6, 4, 8 };
        var examples = lengths.Select((n, i) => new EncodedExample(Enumerable.Repeat((long)(i + 1), n).ToArray(), Enumerable.Repeat((long)(i + 1), n).ToArray())).ToList();
        var rows = SequencePacker.Pack(examples, 10);
        // Best fit decreasing by hand, longest first (room left in brackets): 9→A(1) 8→B(2) 7→C(3) 6→D(4) 5→E(5), then
        // 4→D(0) (D has the least room that holds 4), 3→C(0), 2→B(0).
        Assert.Equal(new[] { new[] { 9 }, new[] { 8, 2 }, new[] { 7, 3 }, new[] { 6, 4 }, new[] { 5 } }, rows.Select(r => r.SequenceLengths!).ToArray());
        Assert.Equal(lengths.Sum(), rows.Sum(r => r.Length));
        foreach (var row in rows)
        {
            int at = 0;
            foreach (int n in row.SequenceLengths!)
            {
                Assert.Equal(FinetuneObjective.IgnoreIndex, row.Labels[at]); // the first token of each sequence is no target
                Assert.All(row.InputIds[at..(at + n)], id => Assert.Equal(row.InputIds[at], id)); // one example's tokens, contiguous
                at += n;
            }
        }
        using var batch = FinetuneTrainer.Collate(rows, 0);
        Assert.NotNull(batch.Packing);
        Assert.Equal(new long[] { 0, 1, 2, 3, 4, 5, 6, 7, 0, 1 }, batch.Packing!.PositionIds[1].data<long>().ToArray());
        Assert.Equal(new long[] { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1 }, batch.Packing.SequenceIds[1].data<long>().ToArray());
        Assert.Equal(new long[] { 0, 0, 0, 0, 0, -1, -1, -1, -1, -1 }, batch.Packing.SequenceIds[4].data<long>().ToArray());
        var tooLong = Assert.Throws<ArgumentException>(() => SequencePacker.Pack(examples, 8));
        Assert.Contains("Example 0 (0-based) has 9 tokens", tooLong.Message);
    }
}
