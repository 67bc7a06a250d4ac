using ML.Finetune.Adapters;
using ML.Finetune.Generation;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.PromptPrefix;

/// <summary>
/// Greedy decoding with a KV cache that starts from the method's <see cref="GenerationPrefix"/> (soft prompt or
/// pre-filled prefix cache) equals a no-cache argmax loop over <see cref="IFinetuneMethod.Logits"/>.
/// </summary>
public class PromptPrefixGenerationTests
{
    const int NewTokens = 8;

    /// <summary>No cache: re-run the whole sequence through the method each step.</summary>
    static (long[,] Ids, Tensor StepLogits) NoCacheLoop(IFinetuneMethod method, CausalLM m, Tensor prompt)
    {
        var ids = prompt;
        var steps = new List<Tensor>();
        for (int s = 0; s < NewTokens; s++)
        {
            var last = method.Logits(m, ids, torch.ones_like(ids)).select(1, -1);
            steps.Add(last);
            ids = torch.cat([ids, last.argmax(-1, keepdim: true)], 1);
        }
        return (ToArray(ids), torch.stack(steps, 1));
    }

    /// <summary>KV cache seeded from GetGenerationPrefix; one token per step after the prompt.</summary>
    static (long[,] Ids, Tensor StepLogits) CachedLoop(IFinetuneMethod method, CausalLM m, Tensor prompt)
    {
        long b = prompt.shape[0], t = prompt.shape[1];
        var gp = method.GetGenerationPrefix(m)!;
        using var cache = gp.PrefixCache?.Invoke((int)b) ?? m.NewCache();
        long virt = gp.SoftPrompt?.shape[0] ?? 0;
        long total = cache.Length + virt + t;
        Tensor first = gp.SoftPrompt is Tensor sp
            ? torch.cat([sp.unsqueeze(0).expand(b, -1, -1), m.EmbedTokens(prompt)], 1)
            : m.EmbedTokens(prompt);
        var logits = m.Forward(new CausalLMInput { InputsEmbeds = first, AttentionMask = torch.ones(b, total, dtype: ScalarType.Int64), Cache = cache }).Logits;
        var ids = prompt;
        var steps = new List<Tensor>();
        for (int s = 0; s < NewTokens; s++)
        {
            var last = logits.select(1, -1);
            steps.Add(last);
            var next = last.argmax(-1, keepdim: true);
            ids = torch.cat([ids, next], 1);
            total++;
            logits = m.Forward(new CausalLMInput { InputIds = next, AttentionMask = torch.ones(b, total, dtype: ScalarType.Int64), Cache = cache }).Logits;
        }
        return (ToArray(ids), torch.stack(steps, 1));
    }

    static long[,] ToArray(Tensor ids)
    {
        var a = new long[ids.shape[0], ids.shape[1]];
        var flat = ids.data<long>().ToArray();
        for (int i = 0; i < a.GetLength(0); i++)
            for (int j = 0; j < a.GetLength(1); j++) a[i, j] = flat[i * a.GetLength(1) + j];
        return a;
    }

    static void AssertSame(IFinetuneMethod method, CausalLM m)
    {
        using var _ = torch.no_grad();
        var prompt = Fixtures.Input("input_ids_right").narrow(1, 0, 7); // both rows have ≥ 7 real tokens
        var (a, la) = NoCacheLoop(method, m, prompt);
        var (b, lb) = CachedLoop(method, m, prompt);
        Assert.Equal(a, b);
        double d = Fixtures.MaxAbsDiff(la, lb);
        Assert.True(d < 1e-4, $"step logits differ by {d}");
        // ...and the method actually changes what is generated relative to the base model.
        using (method.UsePretrained(m)) Assert.Null(method.GetGenerationPrefix(m));
    }

    [Fact]
    public void Greedy_PrefixCache_EqualsNoCacheLoop_Llama()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        using var px = PeftPromptLearning.LoadPrefixTuning(Fixtures.Model("tiny-llama-prefix-tuning"), m);
        AssertSame(px, m);
    }

    [Fact]
    public void Greedy_PrefixCache_EqualsNoCacheLoop_Gpt2Projection()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        using var px = new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 3, PrefixProjection = true, EncoderHiddenSize = 32 });
        px.Attach(m, 11);
        AssertSame(px, m);
    }

    [Fact]
    public void Greedy_SoftPrompt_EqualsNoCacheLoop_Llama()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        using var pt = PeftPromptLearning.LoadPromptTuning(Fixtures.Model("tiny-llama-prompt-tuning"), m);
        AssertSame(pt, m);
    }
    [Fact]
    public void TextGenerator_WithPrefixCache_EqualsMethodArgmaxLoop_IncludingLeftPadding()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        using var px = PeftPromptLearning.LoadPrefixTuning(Fixtures.Model("tiny-llama-prefix-tuning"), m);
        var gp = px.GetGenerationPrefix(m)!;
        Assert.Null(gp.SoftPrompt);
        var prompt = Fixtures.Input("input_ids_right").narrow(1, 0, 7);
        var (expected, expLogits) = NoCacheLoop(px, m, prompt);
        foreach (bool useCache in new[] { true, false })
        {
            var r = TextGenerator.Generate(m, prompt, torch.ones_like(prompt), new GenerationOptions
            {
                MaxNewTokens = NewTokens, PrefixCache = gp.PrefixCache, UseCache = useCache, OutputLogits = true, EosTokenIds = [],
            });
            for (int row = 0; row < 2; row++)
                Assert.Equal(Enumerable.Range(7, NewTokens).Select(j => expected[row, j]), r.NewTokens[row]);
            double d = Fixtures.MaxAbsDiff(torch.stack(r.StepLogits!, 1), expLogits);
            Assert.True(d < 1e-4, $"useCache={useCache}: step logits differ by {d}");
        }

        // Left padding: row 1 of the generation fixture's batch (3 pads + 7 tokens) gives the same new tokens as its
        // 7 tokens alone (pads never change real tokens; positions are cumsum(mask)-1 shifted by P).
        var ids = Fixtures.Generation("prompt_batch_ids");
        var mask = Fixtures.Generation("prompt_batch_mask");
        var batch = TextGenerator.Generate(m, ids, mask, new GenerationOptions { MaxNewTokens = NewTokens, PrefixCache = gp.PrefixCache, EosTokenIds = [] });
        var alone = ids.narrow(0, 1, 1).narrow(1, 3, 7);
        var (single, _) = NoCacheLoop(px, m, alone);
        Assert.Equal(Enumerable.Range(7, NewTokens).Select(j => single[0, j]), batch.NewTokens[1]);
    }
}
