using Microsoft.ML;
using ML.Finetune.Adapters;
using ML.Finetune.Estimators;
using ML.Finetune.Generation;
using ML.Finetune.Models;
using ML.Finetune.Tests.Estimators;
using ML.Finetune.Training;
using ML.Finetune.Transformers;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.PromptPrefix;

/// <summary>
/// The method-aware TextGenerator (soft prompt and/or KV prefix from the method): greedy ids and step logits equal a
/// full recompute through <see cref="IFinetuneMethod.Logits"/>, with and without the cache, one by one and in a
/// left-padded batch; the transformer's GeneratedText equals that recompute too.
/// </summary>
public class MethodAwareGenerationTests
{
    const int NewTokens = 8;

    public static TheoryData<string, bool> Methods()
    {
        var d = new TheoryData<string, bool>();
        foreach (var kind in new[] { "prompt", "prefix", "prompt-gpt2", "prefix-gpt2" })
            foreach (bool useCache in new[] { true, false }) d.Add(kind, useCache);
        return d;
    }

    /// <summary>peft's tiny-llama adapters, or fresh methods on tiny-gpt2 (learned absolute positions).</summary>
    static (CausalLM Model, IFinetuneMethod Method) Load(string kind)
    {
        var m = CausalLMFactory.LoadPretrained(Fixtures.Model(kind.EndsWith("gpt2") ? "tiny-gpt2" : "tiny-llama"));
        IFinetuneMethod method = kind switch
        {
            "prompt" => PeftPromptLearning.LoadPromptTuning(Fixtures.Model("tiny-llama-prompt-tuning"), m),
            "prefix" => PeftPromptLearning.LoadPrefixTuning(Fixtures.Model("tiny-llama-prefix-tuning"), m),
            "prompt-gpt2" => new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 3 }),
            _ => new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 3, PrefixProjection = true, EncoderHiddenSize = 32 }),
        };
        if (kind.EndsWith("gpt2")) method.Attach(m, 11);
        return (m, method);
    }

    static long[] Row(Tensor t, int r) => t[r].data<long>().ToArray();

    /// <summary>Three lengths, so that the batch is left-padded (row 0 of input_ids_right is all real, row 1 has 9 real tokens).</summary>
    static List<long[]> Prompts()
    {
        var ids = Fixtures.Input("input_ids_right");
        return [Row(ids, 0)[..9], Row(ids, 1)[..4], Row(ids, 0)[..6]];
    }

    /// <summary>Greedy without a cache: prompt + generated tokens through <paramref name="logitsOf"/> each step.</summary>
    static (long[] Ids, Tensor StepLogits) Recompute(Func<Tensor, Tensor> logitsOf, long[] prompt)
    {
        var ids = prompt.ToList();
        var steps = new List<Tensor>();
        for (int s = 0; s < NewTokens; s++)
        {
            var last = logitsOf(torch.tensor(ids.ToArray(), [1, ids.Count])).select(1, -1);
            steps.Add(last);
            ids.Add(last.argmax(-1).item<long>());
        }
        return (ids.Skip(prompt.Length).ToArray(), torch.cat(steps, 0));
    }

    static void AssertClose(Tensor a, Tensor b, string what)
    {
        double d = Fixtures.MaxAbsDiff(a, b);
        Assert.True(d < 1e-4, $"{what}: step logits differ by {d}");
    }

    [Theory, MemberData(nameof(Methods))]
    public void Greedy_EqualsRecomputeThroughMethodLogits_OneByOneAndLeftPaddedBatch(string kind, bool useCache)
    {
        using var scope = NewDisposeScope();
        var (m, method) = Load(kind);
        using var _ = m;
        using var owner = (IDisposable)method;
        using var noGrad = torch.no_grad();
        var prompts = Prompts();
        var options = new GenerationOptions { MaxNewTokens = NewTokens, EosTokenIds = [], UseCache = useCache, OutputLogits = true };
        var batch = TextGenerator.Generate(m, method, prompts, options);
        for (int r = 0; r < prompts.Count; r++)
        {
            var (expected, expLogits) = Recompute(t => method.Logits(m, t, torch.ones_like(t)), prompts[r]);
            var alone = TextGenerator.Generate(m, method, [prompts[r]], options);
            Assert.Equal(expected, alone.NewTokens[0]);
            AssertClose(torch.cat(alone.StepLogits!.ToArray(), 0), expLogits, $"row {r} alone");
            Assert.Equal(expected, batch.NewTokens[r]);
            AssertClose(torch.stack(batch.StepLogits!.Select(l => l[r]).ToArray(), 0), expLogits, $"row {r} in the batch");
        }
        // The method is in effect: the base model alone scores the first step differently.
        var plain = TextGenerator.Generate(m, prompts, options with { MaxNewTokens = 1 });
        Assert.True(Fixtures.MaxAbsDiff(plain.StepLogits![0], batch.StepLogits![0]) > 1e-3, "the method changed nothing");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SoftPromptTogetherWithPrefixCache_EqualsRecompute(bool useCache)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        using var pt = PeftPromptLearning.LoadPromptTuning(Fixtures.Model("tiny-llama-prompt-tuning"), m);
        using var px = PeftPromptLearning.LoadPrefixTuning(Fixtures.Model("tiny-llama-prefix-tuning"), m);
        using var noGrad = torch.no_grad();
        // Reference layout: P prefix entries in the cache, then [soft prompt, tokens] at the default positions P, P+1, …
        Tensor Logits(Tensor ids)
        {
            using var cache = px.BuildCache(1);
            var embeds = torch.cat([pt.SoftPrompt.unsqueeze(0), m.EmbedTokens(ids)], 1);
            long total = cache.Length + embeds.shape[1];
            return m.Forward(new CausalLMInput { InputsEmbeds = embeds, AttentionMask = torch.ones(1, total, dtype: ScalarType.Int64), Cache = cache }).Logits;
        }
        var prompts = Prompts();
        var options = new GenerationOptions
        {
            MaxNewTokens = NewTokens, EosTokenIds = [], UseCache = useCache, OutputLogits = true, SoftPrompt = pt.SoftPrompt, PrefixCache = px.BuildCache,
        };
        var batch = TextGenerator.Generate(m, prompts, options);
        for (int r = 0; r < prompts.Count; r++)
        {
            var (expected, expLogits) = Recompute(Logits, prompts[r]);
            Assert.Equal(expected, batch.NewTokens[r]);
            AssertClose(torch.stack(batch.StepLogits!.Select(l => l[r]).ToArray(), 0), expLogits, $"row {r}");
        }
        // The method overload does not silently drop a prefix the caller already set.
        Assert.Throws<ArgumentException>(() => TextGenerator.Generate(m, pt, prompts, new GenerationOptions { PrefixCache = px.BuildCache }));
    }

    [Fact]
    public void Transformer_PromptTuned_GeneratedTextEqualsRecompute_AndSamplingIsSeededPerBatch()
    {
        var ml = new MLContext(seed: 1);
        var o = new PromptTuneOptions
        {
            NumVirtualTokens = 3, BaseModelPath = TinyWordModel.Folder, MaxSteps = 5, BatchSize = 6, Seed = 3, LearningRate = 0.05,
            Schedule = LearningRateScheduleKind.Constant, MaxSequenceLength = 16, NumberOfThreads = 1,
        };
        o.Generation.MaxNewTokens = 5;
        using var fitted = ml.Transforms.PromptTune(o).Fit(TinyWordModel.Data(ml));
        FinetuneTransformer With(FinetuneTransformerSettings s) =>
            new(null, fitted.Model, fitted.Tokenizer, fitted.Method, s, fitted.TrainingHistory, fitted.BaseModel, new());
        var prompts = TinyWordModel.Facts.Select(f => f.Prompt).Concat(["where", "is the a of yale"]).ToList();

        // What the transformer must produce: greedy through the method's logits, stop at eos, eos not decoded.
        var eos = new HashSet<long>(fitted.Model.Config.EosTokenIds) { fitted.Encoder.EosId };
        var expected = new List<string>();
        using (torch.no_grad())
            foreach (var p in prompts)
            {
                var ids = fitted.Encoder.EncodePrompt(p).ToList();
                var generated = new List<int>();
                for (int s = 0; s < 5; s++)
                {
                    using var scope = NewDisposeScope();
                    var t = torch.tensor(ids.ToArray(), [1, ids.Count]);
                    long next = fitted.Method.Logits(fitted.Model, t, torch.ones_like(t))[0, -1].argmax().item<long>();
                    if (eos.Contains(next)) break;
                    generated.Add((int)next);
                    ids.Add(next);
                }
                expected.Add(fitted.Tokenizer.Decode(generated));
            }
        Assert.Contains(expected, s => s.Length > 0);
        // Batches of 3: left-padded, and the last batch is partial.
        Assert.Equal(expected, With(fitted.Settings with { BatchSize = 3 }).Generate(prompts));
        Assert.Equal(expected, With(fitted.Settings with { BatchSize = 1 }).Generate(prompts));

        // Sampling is reproducible, and the batch starting at row i samples with seed GenerationSeed + i: the second
        // batch alone with seed 4 + 3 gives the same text.
        var sampling = fitted.Settings with { BatchSize = 3, Temperature = 1.5, TopK = 3, TopP = 0.9, GenerationSeed = 4 };
        var a = With(sampling).Generate(prompts);
        Assert.Equal(a, With(sampling).Generate(prompts));
        Assert.NotEqual(expected, a);
        Assert.Equal(a.Skip(3).Take(3), With(sampling with { GenerationSeed = 7 }).Generate(prompts.Skip(3).Take(3).ToList()));
    }
}
