using ML.Finetune.Adapters;
using ML.Finetune.Models;
using static TorchSharp.torch;
using static ML.Finetune.Tests.Lora.LoraTestUtil;

namespace ML.Finetune.Tests.Lora;

public class LoraMergeTests
{
    [Fact]
    public void Lora_Merge_MatchesAdapterLogits_UnmergeRestoresWeights()
    {
        using var scope = NewDisposeScope();
        var (m, method) = LlamaWithFixtureAdapter();
        using var _ = m;
        var adapterLogits = Logits(m, method);
        var w0 = method.Targets.Select(t => t.Layer.weight.detach().clone()).ToList();
        method.Merge();
        Assert.True(method.IsMerged);
        Assert.All(method.Targets, t => Assert.False(t.Layer.AdapterEnabled));
        Assert.True(Fixtures.MaxAbsDiff(Logits(m, method), adapterLogits) < 1e-5, "merged logits");
        Assert.True(Fixtures.MaxAbsDiff(Logits(m, method), Fixtures.Ref("tiny-llama-lora", "logits_right")) < 1e-5, "merged vs peft");
        Assert.Throws<InvalidOperationException>(() => method.UsePretrained(m));
        method.Unmerge();
        Assert.False(method.IsMerged);
        for (int i = 0; i < w0.Count; i++) Assert.True(Fixtures.MaxAbsDiff(method.Targets[i].Layer.weight, w0[i]) < 1e-6, "unmerged weight");
        Assert.True(Fixtures.MaxAbsDiff(Logits(m, method), adapterLogits) < 1e-5, "unmerged logits");

        method.MergeAndUnload();
        Assert.DoesNotContain(m.named_parameters(), p => p.name.Contains(".lora."));
        Assert.DoesNotContain(m.NamedLinears(), l => l.module.Adapter != null);
        Assert.True(Fixtures.MaxAbsDiff(Logits(m), adapterLogits) < 1e-5, "unloaded logits");
    }

    [Fact]
    public void Lora_MergedGpt2_SavedInHfLayout_ReloadsWithAdapterLogits()
    {
        // GPT-2 Conv1D: our weights are [out, in]; merging adds s·B·A directly, and SavePretrained writes HF's [in, out].
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        var method = new LoraMethod(new LoraConfig { Rank = 4, Alpha = 8, Init = LoraInit.Gaussian });
        method.Attach(m, seed: 7);
        using (no_grad()) foreach (var t in method.Targets) t.Adapter.B.normal_(0, 0.1);
        var adapterLogits = Logits(m, method);
        Assert.True(Fixtures.MaxAbsDiff(adapterLogits, Fixtures.Ref("tiny-gpt2", "logits_right")) > 1e-2, "adapter changes the model");
        method.Merge();
        string dir = Fixtures.TempDir();
        CausalLMFactory.SavePretrained(m, dir);
        using var merged = CausalLMFactory.LoadPretrained(dir);
        Assert.True(Fixtures.MaxAbsDiff(Logits(merged), adapterLogits) < 1e-5);
        Directory.Delete(dir, true);
    }
}
