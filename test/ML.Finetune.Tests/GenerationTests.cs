using ML.Finetune.Generation;
using ML.Finetune.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ML.Finetune.Tests;

/// <summary>Greedy generation against HF generate() and against a no-cache argmax loop.</summary>
public class GenerationTests
{
    public static TheoryData<string> Models => new() { "tiny-gpt2", "tiny-llama", "tiny-qwen2" };

    static long[] Row(Tensor t, int r) => t[r].data<long>().ToArray();

    [Theory, MemberData(nameof(Models))]
    public void Greedy_Single_MatchesHFIdsAndStepLogits_AndNoCacheLoop(string name)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model(name));
        var prompt = Fixtures.Generation("prompt_single_ids");
        var mask = torch.ones_like(prompt);
        var opts = new GenerationOptions { MaxNewTokens = 10, EosTokenIds = [], OutputLogits = true };
        var cached = TextGenerator.Generate(m, prompt, mask, opts);
        var expected = Row(Fixtures.Generation($"{name}.single_ids"), 0).Skip(7).ToArray();
        Assert.Equal(expected, cached.NewTokens[0]);
        var steps = torch.cat(cached.StepLogits!.ToArray(), 0);
        double diff = Fixtures.MaxAbsDiff(steps, Fixtures.Generation($"{name}.single_step_logits"));
        Assert.True(diff < 1e-4, $"step logits diff {diff}");
        var nocache = TextGenerator.Generate(m, prompt, mask, new GenerationOptions { MaxNewTokens = 10, EosTokenIds = [], UseCache = false });
        Assert.Equal(cached.NewTokens[0], nocache.NewTokens[0]);
    }

    [Theory, MemberData(nameof(Models))]
    public void Greedy_LeftPaddedBatch_MatchesHFAndNoCacheLoop(string name)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model(name));
        var ids = Fixtures.Generation("prompt_batch_ids");
        var mask = Fixtures.Generation("prompt_batch_mask");
        var opts = new GenerationOptions { MaxNewTokens = 10, EosTokenIds = [] };
        var cached = TextGenerator.Generate(m, ids, mask, opts);
        var hf = Fixtures.Generation($"{name}.batch_ids");
        for (int r = 0; r < 2; r++) Assert.Equal(Row(hf, r).Skip(10).ToArray(), cached.NewTokens[r]);
        var nocache = TextGenerator.Generate(m, ids, mask, new GenerationOptions { MaxNewTokens = 10, EosTokenIds = [], UseCache = false });
        Assert.Equal(cached.NewTokens, nocache.NewTokens);
        // The list overload left-pads itself and must agree.
        var prompts = Enumerable.Range(0, 2).Select(r => Row(ids, r).Where((_, i) => Row(mask, r)[i] == 1).ToArray()).ToList();
        Assert.Equal(cached.NewTokens, TextGenerator.Generate(m, prompts, opts).NewTokens);
    }

    [Fact]
    public void Eos_StopsRow_AndSamplingIsSeeded()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        var prompt = new[] { Row(Fixtures.Generation("prompt_single_ids"), 0) };
        // HF's greedy continuation starts 996 722 …; declaring 722 an eos id must stop after it.
        var r = TextGenerator.Generate(m, prompt, new GenerationOptions { MaxNewTokens = 10, EosTokenIds = [722] });
        Assert.Equal(new long[] { 996, 722 }, r.NewTokens[0]);
        var s = new GenerationOptions { MaxNewTokens = 8, DoSample = true, Temperature = 0.9, TopK = 50, TopP = 0.9, Seed = 7, EosTokenIds = [] };
        var a = TextGenerator.Generate(m, prompt, s).NewTokens[0];
        var b = TextGenerator.Generate(m, prompt, s).NewTokens[0];
        Assert.Equal(a, b);
        Assert.Equal(8, a.Length);
    }

    [Fact]
    public void PrefixCache_EmptyPrefixOfLengthZeroEqualsPlainGreedy_AndPrefixPathRuns()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var prompt = new[] { Row(Fixtures.Generation("prompt_single_ids"), 0) };
        // peft's prefix for tiny-llama: keys/values [L, n_kv, P, D].
        var keys = Fixtures.Ref("tiny-llama-prefix-tuning", "prefix_keys");
        var values = Fixtures.Ref("tiny-llama-prefix-tuning", "prefix_values");
        KVCache Prefix(int batch) => KVCache.FromPrefix([keys[0], keys[1]], [values[0], values[1]], batch);
        var cached = TextGenerator.Generate(m, prompt, new GenerationOptions { MaxNewTokens = 6, EosTokenIds = [], PrefixCache = Prefix });
        var nocache = TextGenerator.Generate(m, prompt, new GenerationOptions { MaxNewTokens = 6, EosTokenIds = [], PrefixCache = Prefix, UseCache = false });
        Assert.Equal(cached.NewTokens, nocache.NewTokens);
    }

    [Fact]
    public void Score_MatchesHFNextTokenLogprobs()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var ids = Fixtures.Input("input_ids_right");
        var lp = Fixtures.Ref("tiny-llama", "next_token_logprobs_right");
        var row0 = Row(ids, 0);
        var row1 = Row(ids, 1).Take(9).ToArray();
        var scores = TextGenerator.Score(m, [row0[..5], row1[..4]], [row0[5..], row1[4..]], batchSize: 2);
        double exp0 = lp[0].data<float>().Skip(4).Sum(x => (double)x);
        double exp1 = lp[1].data<float>().Skip(3).Take(5).Sum(x => (double)x);
        Assert.InRange(scores[0].Sum - exp0, -1e-4, 1e-4);
        Assert.InRange(scores[1].Sum - exp1, -1e-4, 1e-4);
        Assert.InRange(scores[0].Mean - exp0 / 7, -1e-5, 1e-5);
    }
}
