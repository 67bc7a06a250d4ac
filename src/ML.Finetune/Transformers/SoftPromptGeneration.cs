using ML.Finetune.Estimators;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Transformers;

/// <summary>
/// Method-aware pieces the shared Generation/TextGenerator lacks: generation with a soft prompt (prompt tuning) and
/// scoring through <see cref="IFinetuneMethod.Logits"/>. Used by <see cref="FinetuneTransformer"/> (to merge into the
/// shared Generation/ code). Prompts are left-padded; positions = cumsum(mask) − 1; the method's generation prefix
/// (soft prompt and/or pre-filled KV prefix) is honoured.
/// </summary>
internal static class SoftPromptGeneration
{
    public static List<long[]> Generate(CausalLM model, IFinetuneMethod method, IReadOnlyList<long[]> prompts,
        FinetuneGenerationOptions g, IReadOnlySet<long> eosIds, long padId, Generator? rng)
    {
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var dev = model.Device;
        int b = prompts.Count, l = Math.Max(1, prompts.Max(p => p.Length));
        var ids = new long[b * l]; var mask = new long[b * l];
        for (int i = 0; i < b; i++)
        {
            int off = l - prompts[i].Length;
            for (int j = 0; j < l; j++) { ids[i * l + j] = j < off ? padId : prompts[i][j - off]; mask[i * l + j] = j < off ? 0 : 1; }
        }
        var idT = torch.tensor(ids, new long[] { b, l }).to(dev);
        var maskT = torch.tensor(mask, new long[] { b, l }).to(dev);
        var prefix = method.GetGenerationPrefix(model);
        using var cache = prefix?.PrefixCache?.Invoke(b) ?? model.NewCache();
        long p = cache.Length;
        Tensor? soft = prefix?.SoftPrompt;
        long k = soft?.shape[0] ?? 0;
        var fullMask = torch.cat(new[] { torch.ones(b, p + k, dtype: ScalarType.Int64, device: dev), maskT }, 1);
        var pos = fullMask.cumsum(1).sub(1).clamp_min(0)[.., (int)p..];
        CausalLMInput input = soft is null
            ? new CausalLMInput { InputIds = idT, AttentionMask = fullMask, PositionIds = pos, Cache = cache }
            : new CausalLMInput
            {
                InputsEmbeds = torch.cat(new[] { soft.to(dev).to_type(model.ComputeDType).unsqueeze(0).expand(b, -1, -1), model.EmbedTokens(idT) }, 1),
                AttentionMask = fullMask, PositionIds = pos, Cache = cache,
            };
        var logits = model.Forward(input).Logits[.., -1, ..];
        var lastPos = pos.narrow(1, pos.shape[1] - 1, 1); // (a range from -1 throws: System.Index cannot be negative)
        var outputs = Enumerable.Range(0, b).Select(_ => new List<long>()).ToArray();
        var done = new bool[b];
        for (int step = 0; step < g.MaxNewTokens; step++)
        {
            var next = Choose(logits, g, rng);
            var chosen = next.cpu().data<long>().ToArray();
            for (int i = 0; i < b; i++)
            {
                if (done[i]) { chosen[i] = padId; continue; }
                if (eosIds.Contains(chosen[i])) { done[i] = true; continue; }
                outputs[i].Add(chosen[i]);
            }
            if (done.All(d => d) || step == g.MaxNewTokens - 1) break;
            var nextT = torch.tensor(chosen, new long[] { b, 1 }).to(dev);
            fullMask = torch.cat(new[] { fullMask, torch.ones(b, 1, dtype: ScalarType.Int64, device: dev) }, 1);
            lastPos = lastPos.add(1);
            logits = model.Forward(new CausalLMInput { InputIds = nextT, AttentionMask = fullMask, PositionIds = lastPos, Cache = cache }).Logits[.., -1, ..];
        }
        return outputs.Select(o => o.ToArray()).ToList();
    }

    static Tensor Choose(Tensor logits, FinetuneGenerationOptions g, Generator? rng)
    {
        if (g.Temperature <= 0) return logits.argmax(-1);
        var l = logits.to_type(ScalarType.Float32).div(g.Temperature);
        if (g.TopK > 0 && g.TopK < l.shape[^1])
        {
            var kth = l.topk(g.TopK, -1).values.narrow(-1, g.TopK - 1, 1);
            l = l.masked_fill(l.lt(kth), float.NegativeInfinity);
        }
        if (g.TopP < 1.0)
        {
            var (sorted, idx) = l.sort(-1, descending: true);
            var cum = sorted.softmax(-1).cumsum(-1);
            var remove = cum.sub(sorted.softmax(-1)).gt(g.TopP); // keep the smallest set whose mass reaches TopP
            var removeOrig = torch.zeros_like(remove).scatter(-1, idx, remove);
            l = l.masked_fill(removeOrig, float.NegativeInfinity);
        }
        return torch.multinomial(l.softmax(-1), 1, generator: rng).squeeze(-1);
    }

    /// <summary>Per example: (Σ log p(target), number of targets) over the labelled (completion + eos) positions.</summary>
    public static List<(double Sum, int Count)> Score(CausalLM model, IFinetuneMethod method, IReadOnlyList<EncodedExample> examples, long padId)
    {
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        using var batch = FinetuneTrainer.Collate(examples, padId, model.Device);
        var logits = method.Logits(model, batch.InputIds, batch.AttentionMask);
        var (lp, m) = FinetuneObjective.TargetLogProbs(logits, batch.Labels);
        var sums = lp.to_type(ScalarType.Float64).sum(1).cpu().data<double>().ToArray();
        var counts = m.sum(1).to_type(ScalarType.Float64).cpu().data<double>().ToArray();
        return sums.Select((s, i) => (s, (int)counts[i])).ToList();
    }
}
