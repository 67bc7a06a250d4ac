using ML.Finetune.Adapters;
using ML.Finetune.Generation;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Families;

/// <summary>
/// The main job's four methods (full, LoRA, prompt, prefix) through the library's one training loop on a small model
/// of every family (llama with llama3 rope, mistral and qwen2 with sliding windows, qwen3, phi3 with LongRoPE, partial
/// rotary and a window, gemma2, gemma3): a few AdamW steps lower the completion loss, generation with the trained method
/// gives the same tokens with and without the KV cache, and the method's saved state restores the same logits on a
/// freshly loaded base.
/// </summary>
public class FamilyMethodsTests
{
    /// <summary>One small model per family (the rope variants of a family share its code path; their parity is tested elsewhere).</summary>
    static readonly string[] Folders =
    [
        ArchFixtures.Model("tiny-llama3-rope"), ArchFixtures.Extra("tiny-mistral-sw"), ArchFixtures.Extra("tiny-qwen2-sw"),
        ArchFixtures.Model("tiny-qwen3"), ArchFixtures.Extra("tiny-phi3-longrope"), ArchFixtures.Model("tiny-gemma2"), ArchFixtures.Model("tiny-gemma3"),
    ];

    public static TheoryData<string, string> Runs()
    {
        var d = new TheoryData<string, string>();
        foreach (var f in Folders)
            foreach (var method in new[] { "full", "lora", "prompt", "prefix" })
                d.Add(Path.GetFileName(f), method);
        return d;
    }

    static IFinetuneMethod Make(string method) => method switch
    {
        "full" => new FullFinetuneMethod(),
        "lora" => new LoraMethod(new LoraConfig { Rank = 4, Alpha = 8, TargetModules = [LoraConfig.AllLinear] }),
        "prompt" => new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 4, InitRange = 0.5 }),
        _ => new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 3, InitStd = 0.5 }),
    };

    static double LearningRate(string method) => method switch { "full" => 3e-3, "lora" => 1e-2, _ => 5e-2 };

    /// <summary>
    /// Six "prompt → completion" pairs over the fixtures' vocabulary (ids 3..999), 6 tokens: longer than the 4-key
    /// windows, short enough that the completion still reaches virtual tokens through two windowed layers.
    /// </summary>
    static List<EncodedExample> Data()
    {
        var r = new Random(5);
        var list = new List<EncodedExample>();
        for (int i = 0; i < 6; i++)
        {
            var prompt = Enumerable.Range(0, 3).Select(_ => (long)r.Next(3, 1000)).ToArray();
            long[] completion = [r.Next(3, 1000), r.Next(3, 1000), 2];
            list.Add(new EncodedExample([.. prompt, .. completion], [.. prompt.Select(_ => -100L), .. completion]));
        }
        return list;
    }

    static double Loss(CausalLM m, IFinetuneMethod method, List<EncodedExample> data)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var b = FinetuneTrainer.Collate(data, 0);
        return FinetuneObjective.CrossEntropy(method.Logits(m, b.InputIds, b.AttentionMask), b.Labels).item<float>();
    }

    [Theory, MemberData(nameof(Runs))]
    public void Method_Trains_Generates_AndRestores(string model, string methodName)
    {
        using var scope = NewDisposeScope();
        string folder = Folders.Single(f => Path.GetFileName(f) == model);
        using var m = CausalLMFactory.LoadPretrained(folder);
        var method = Make(methodName);
        method.Attach(m, 17);
        var data = Data();
        double before = Loss(m, method, data);
        var trainer = new FinetuneTrainer(new TrainerOptions { LearningRate = LearningRate(methodName), MaxSteps = 6, BatchSize = 6, Seed = 3, TuneMalloc = false }, padId: 0);
        var history = trainer.Train(m, method, data);
        Assert.Equal(6, history.Records.Count);
        m.eval();
        double after = Loss(m, method, data);
        Assert.True(after < before - 0.3, $"{model} {methodName}: loss {before:F3} -> {after:F3}");

        var prompts = data.Take(2).Select(e => e.InputIds.Take(3).ToArray()).Append([17, 400, 23, 99, 5, 8]).ToList();
        var cached = TextGenerator.Generate(m, method, prompts, new GenerationOptions { MaxNewTokens = 6, EosTokenIds = [] });
        var uncached = TextGenerator.Generate(m, method, prompts, new GenerationOptions { MaxNewTokens = 6, EosTokenIds = [], UseCache = false });
        Assert.Equal(uncached.NewTokens, cached.NewTokens);

        var (tensors, json) = method.SaveState();
        using var fresh = CausalLMFactory.LoadPretrained(folder);
        var restored = FinetuneMethodFactory.Create(method.Name, json);
        restored.Attach(fresh, 17);
        restored.LoadState(tensors);
        var batch = FinetuneTrainer.Collate(data, 0);
        using var _ = no_grad();
        Assert.Equal(0.0, Fixtures.MaxAbsDiff(restored.Logits(fresh, batch.InputIds, batch.AttentionMask), method.Logits(m, batch.InputIds, batch.AttentionMask)));
    }
}
