using ML.Finetune.Adapters;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.PromptPrefix;

/// <summary>Training behaviour, initialisation, state round trips and bad input.</summary>
public class PromptPrefixTrainingTests
{
    public static TheoryData<string> Methods => new() { "prompt", "prefix", "prefix-mlp" };

    static IFinetuneMethod Make(string kind) => kind switch
    {
        "prompt" => new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 4, InitRange = 0.1 }),
        "prefix" => new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 3, InitStd = 0.5 }),
        _ => new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 3, PrefixProjection = true, EncoderHiddenSize = 16, InitStd = 0.5 }),
    };

    /// <summary>A tiny synthetic task: one fixed sequence (a repeated 4-token pattern) to memorise.</summary>
    static (Tensor Ids, Tensor Mask, Tensor Labels) Task()
    {
        var row = Enumerable.Range(0, 12).Select(i => (long)(10 + 7 * (i % 4))).ToArray();
        var ids = torch.tensor(row.Concat(row.Select(v => v + 1)).ToArray()).view(2, 12);
        return (ids, torch.ones_like(ids), ids.clone());
    }

    [Theory, MemberData(nameof(Methods))]
    public void AdamW_TrainsOnlyPrefix_LossDrops_BaseUntouched(string kind)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var method = Make(kind);
        method.Attach(m, 42);
        var baseBefore = m.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        Assert.All(m.parameters(), p => Assert.False(p.requires_grad));
        var trainable = method.TrainableParameters.Select(p => p.Parameter).ToList();
        Assert.All(trainable, p => Assert.True(p.requires_grad));
        Assert.Equal(0.0, method.DistanceFromPretrainedSquared().item<float>());

        var (ids, mask, labels) = Task();
        var opt = torch.optim.AdamW(trainable.Select(p => (TorchSharp.Modules.Parameter)p), lr: 0.05);
        float first = 0, last = 0;
        for (int step = 0; step < 150; step++)
        {
            using var s = NewDisposeScope();
            opt.zero_grad();
            var loss = ParityTests.HfLoss(method.Logits(m, ids, mask), labels);
            loss.backward();
            opt.step();
            if (step == 0) first = loss.item<float>();
            last = loss.item<float>();
        }
        Assert.True(last < first * 0.75, $"loss {first} -> {last}");
        foreach (var (name, p) in m.named_parameters())
        {
            Assert.True(p.grad is null, $"base parameter {name} has a gradient");
            Assert.Equal(0.0, Fixtures.MaxAbsDiff(p, baseBefore[name]));
        }
        Assert.Equal(trainable.Count, opt.parameters().Count());

        // Distance: Σ(φ−φ₀)² > 0 and differentiable; UsePretrained = the base model.
        var dist = method.DistanceFromPretrainedSquared();
        Assert.True(dist.item<float>() > 0 && dist.requires_grad);
        var plain = m.Forward(new CausalLMInput { InputIds = ids, AttentionMask = mask }).Logits;
        using (method.UsePretrained(m)) Assert.Equal(0.0, Fixtures.MaxAbsDiff(method.Logits(m, ids, mask), plain));

        // SaveState/LoadState into a fresh method with the same seed reproduces the trained logits.
        var trained = method.Logits(m, ids, mask).detach();
        var (tensors, json) = method.SaveState();
        var fresh = kind == "prompt" ? (IFinetuneMethod)new PromptTuningMethod(PromptTuningMethod.OptionsFromJson(json))
                                     : new PrefixTuningMethod(PrefixTuningMethod.OptionsFromJson(json));
        fresh.Attach(m, 42);
        fresh.LoadState(tensors);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(fresh.Logits(m, ids, mask), trained));
        Assert.Equal(dist.item<float>(), fresh.DistanceFromPretrainedSquared().item<float>(), 4);

        if (method is PrefixTuningMethod px && px.HasProjection)
        {
            float before = dist.item<float>();
            px.FoldProjection();
            Assert.Equal(0.0, Fixtures.MaxAbsDiff(px.Logits(m, ids, mask), trained), 6);
            Assert.Single(px.TrainableParameters);
            // φ₀ is carried through the fold: the distance is now measured on the table (not the MLP weights), still > 0
            Assert.True(px.DistanceFromPretrainedSquared().item<float>() > 0 && before > 0);
        }
        (method as IDisposable)?.Dispose();
        (fresh as IDisposable)?.Dispose();
    }

    [Fact]
    public void Sgd_Steps_GradientsOnlyOnPrefix()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        using var px = new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 2 });
        px.Attach(m, 1);
        var (ids, mask, labels) = Task();
        var p = px.TrainableParameters[0].Parameter;
        for (int i = 0; i < 3; i++)
        {
            var loss = ParityTests.HfLoss(px.Logits(m, ids, mask), labels);
            loss.backward();
            Assert.NotNull(p.grad);
            Assert.True(p.grad!.abs().sum().item<float>() > 0);
            using (torch.no_grad()) { p.sub_(p.grad!.mul(0.1)); p.grad!.zero_(); }
        }
        Assert.All(m.parameters(), q => Assert.Null(q.grad));
    }

    [Fact]
    public void PromptInit_RandomTextSampleVocab()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var wte = m.EmbedTokens(torch.arange(1000L).unsqueeze(0)).squeeze(0);

        using var r1 = new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 5, InitRange = 0.01 });
        using var r2 = new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 5, InitRange = 0.01 });
        r1.Attach(m, 3); r2.Attach(m, 3);
        Assert.Equal(new long[] { 5, 64 }, r1.SoftPrompt.shape);
        Assert.True(r1.SoftPrompt.abs().max().item<float>() <= 0.01f);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(r1.SoftPrompt, r2.SoftPrompt));

        // Text longer than k: truncated to its first k tokens.
        using var t1 = new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 3, Init = PromptTuningInit.Text, InitTokenIds = [5, 6, 7, 8, 9] });
        t1.Attach(m, 0);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(t1.SoftPrompt, wte.index_select(0, torch.tensor(new long[] { 5, 6, 7 }))));
        // Text shorter than k: repeated.
        using var t2 = new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 5, Init = PromptTuningInit.Text, InitTokenIds = [5, 6] });
        t2.Attach(m, 0);
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(t2.SoftPrompt, wte.index_select(0, torch.tensor(new long[] { 5, 6, 5, 6, 5 }))));

        using var sv = new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 4, Init = PromptTuningInit.SampleVocab });
        sv.Attach(m, 9);
        for (int i = 0; i < 4; i++)
        {
            var row = sv.SoftPrompt[i];
            Assert.True(wte.sub(row).abs().sum(1).min().item<float>() == 0, $"row {i} is not a vocabulary embedding");
        }
        // The base embedding is not shared: training the prompt cannot move the vocabulary.
        Assert.False(sv.SoftPrompt.requires_grad && m.parameters().Any(p => p.requires_grad));
    }

    static string CopyAdapter(string name)
    {
        var dir = Fixtures.TempDir();
        foreach (var f in Directory.GetFiles(Fixtures.Model(name))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    static void EditConfig(string dir, string field, int value)
    {
        var path = Path.Combine(dir, PeftPromptLearning.ConfigFile);
        var o = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        o[field] = value;
        File.WriteAllText(path, o.ToJsonString());
    }

    [Theory]
    [InlineData("tiny-llama-prefix-tuning", "token_dim", 64, "32")]
    [InlineData("tiny-llama-prefix-tuning", "num_layers", 3, "2")]
    [InlineData("tiny-llama-prompt-tuning", "token_dim", 32, "64")]
    [InlineData("tiny-llama-prompt-tuning", "num_layers", 5, "2")]
    public void PeftImport_DimensionMismatch_InvalidDataNamingFieldAndBothValues(string adapter, string field, int bad, string actual)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var dir = CopyAdapter(adapter);
        try
        {
            EditConfig(dir, field, bad);
            var ex = Assert.Throws<InvalidDataException>(() => PeftPromptLearning.Load(dir, m));
            Assert.Contains($"'{field}'", ex.Message);
            Assert.Contains($"is {bad}", ex.Message);
            Assert.Contains($"has {actual}", ex.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void PeftImport_PrefixAdapterOnGpt2_TokenDimMismatch()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        var ex = Assert.Throws<InvalidDataException>(() => PeftPromptLearning.Load(Fixtures.Model("tiny-llama-prefix-tuning"), m));
        Assert.Contains("'token_dim' is 32 but the model has 64", ex.Message);
    }

    [Fact]
    public void PeftImport_UnsupportedPeftType_NotSupported()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var ex = Assert.Throws<NotSupportedException>(() => PeftPromptLearning.Load(Fixtures.Model("tiny-llama-lora"), m));
        Assert.Contains("'LORA'", ex.Message);
        var ex2 = Assert.Throws<NotSupportedException>(() => PeftPromptLearning.LoadPromptTuning(Fixtures.Model("tiny-llama-prefix-tuning"), m));
        Assert.Contains("PREFIX_TUNING", ex2.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-3)]
    public void NonPositiveK_ArgumentOutOfRange(int k)
    {
        var e1 = Assert.Throws<ArgumentOutOfRangeException>(() => new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = k }));
        Assert.Contains("NumVirtualTokens", e1.Message);
        var e2 = Assert.Throws<ArgumentOutOfRangeException>(() => new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = k }));
        Assert.Contains("NumVirtualTokens", e2.Message);
    }

    [Fact]
    public void VirtualTokensPlusPromptBeyondContext_ArgumentNamingBoth()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama")); // context 128
        var ids = torch.full(1, 20, 5L, dtype: ScalarType.Int64);
        foreach (var method in new IFinetuneMethod[]
                 {
                     new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 120 }),
                     new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 120 }),
                 })
        {
            method.Attach(m, 0);
            var ex = Assert.Throws<ArgumentException>(() => method.Logits(m, ids, torch.ones_like(ids)));
            Assert.Contains("120 virtual tokens", ex.Message);
            Assert.Contains("20 tokens", ex.Message);
            Assert.Contains("128", ex.Message);
            // exactly at the limit is fine
            var ok = torch.full(1, 8, 5L, dtype: ScalarType.Int64);
            Assert.Equal(8, method.Logits(m, ok, torch.ones_like(ok)).shape[1]);
            (method as IDisposable)?.Dispose();
        }
    }

    [Fact]
    public void LoadState_MissingOrMisshapenTensor_InvalidData()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        using var pt = new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 2 });
        pt.Attach(m, 0);
        Assert.Contains("'prompt_embeddings' is missing", Assert.Throws<InvalidDataException>(() => pt.LoadState(new Dictionary<string, Tensor>())).Message);
        var ex = Assert.Throws<InvalidDataException>(() => pt.LoadState(new Dictionary<string, Tensor> { ["prompt_embeddings"] = torch.zeros(3, 64) }));
        Assert.Contains("[3,64]", ex.Message); Assert.Contains("[2,64]", ex.Message);
        using var px = new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 2, PrefixProjection = true, EncoderHiddenSize = 8 });
        px.Attach(m, 0);
        Assert.Contains("'mlp.embedding.weight' is missing", Assert.Throws<InvalidDataException>(() => px.LoadState(new Dictionary<string, Tensor>())).Message);
    }
}
