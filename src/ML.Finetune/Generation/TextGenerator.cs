using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Generation;

public sealed class GenerationOptions
{
    public int MaxNewTokens { get; init; } = 32;
    /// <summary>False = greedy (argmax).</summary>
    public bool DoSample { get; init; }
    public double Temperature { get; init; } = 1.0;
    /// <summary>0 = off.</summary>
    public int TopK { get; init; }
    /// <summary>1 = off.</summary>
    public double TopP { get; init; } = 1.0;
    public long Seed { get; init; } = 0;
    /// <summary>Generation stops for a row once it emits one of these. Null = the model config's eos ids.</summary>
    public IReadOnlyList<long>? EosTokenIds { get; init; }
    public long PadTokenId { get; init; }
    /// <summary>False recomputes the whole sequence each step (slow; used to test the cache path).</summary>
    public bool UseCache { get; init; } = true;
    /// <summary>Keep the raw logits [B, V] that chose each token (for tests and diagnostics).</summary>
    public bool OutputLogits { get; init; }
    /// <summary>
    /// Builds a pre-filled cache for a batch size (prefix tuning). Its length P is prepended to the attention
    /// mask and added to the positions, as peft does.
    /// </summary>
    public Func<int, KVCache>? PrefixCache { get; init; }
}

public sealed class GenerationResult
{
    /// <summary>New tokens per row, without padding, including the eos token when one was produced.</summary>
    public required long[][] NewTokens { get; init; }
    /// <summary>Per step [B, V] float32 logits when <see cref="GenerationOptions.OutputLogits"/> is set (caller disposes).</summary>
    public IReadOnlyList<Tensor>? StepLogits { get; init; }
}

/// <summary>Greedy and sampled generation plus log-likelihood scoring on token ids.</summary>
public static class TextGenerator
{
    /// <summary>Generates for prompts of different lengths (left-padded internally with the pad id).</summary>
    public static GenerationResult Generate(CausalLM model, IReadOnlyList<long[]> prompts, GenerationOptions? options = null)
    {
        options ??= new GenerationOptions();
        if (prompts.Count == 0) return new GenerationResult { NewTokens = [] };
        int b = prompts.Count, t = prompts.Max(p => p.Length);
        if (prompts.Any(p => p.Length == 0)) throw new ArgumentException("prompts must not be empty");
        var ids = new long[b * t];
        var mask = new long[b * t];
        for (int r = 0; r < b; r++)
            for (int i = 0; i < t; i++)
            {
                int j = i - (t - prompts[r].Length);
                ids[r * t + i] = j >= 0 ? prompts[r][j] : options.PadTokenId;
                mask[r * t + i] = j >= 0 ? 1 : 0;
            }
        using var idT = torch.tensor(ids, [b, t], device: model.Device);
        using var maskT = torch.tensor(mask, [b, t], device: model.Device);
        return Generate(model, idT, maskT, options);
    }

    /// <summary>Generates from a left-padded batch [B, T] with its attention mask.</summary>
    public static GenerationResult Generate(CausalLM model, Tensor inputIds, Tensor attentionMask, GenerationOptions? options = null)
    {
        options ??= new GenerationOptions();
        var eos = new HashSet<long>(options.EosTokenIds ?? model.Config.EosTokenIds);
        int b = (int)inputIds.shape[0];
        var newTokens = Enumerable.Range(0, b).Select(_ => new List<long>()).ToArray();
        var finished = new bool[b];
        var stepLogits = options.OutputLogits ? new List<Tensor>() : null;
        using var gen = options.DoSample ? new Generator((ulong)options.Seed, model.Device) : null;
        using var noGrad = torch.no_grad();
        using var cache = options.UseCache ? options.PrefixCache?.Invoke(b) ?? model.NewCache() : null;
        using var outer = torch.NewDisposeScope();

        KVCache? PrefixOnly() => options.UseCache ? null : options.PrefixCache?.Invoke(b);
        long prefixLen = options.UseCache ? cache!.Length : 0;
        if (!options.UseCache && options.PrefixCache != null) { using var probe = options.PrefixCache(b); prefixLen = probe.Length; }

        // Positions follow generate(): cumsum(mask) - 1 with pads at 0, shifted by a prefix length (peft).
        var seq = inputIds.alias();
        var mask = attentionMask.to_type(ScalarType.Int64);
        var pos = mask.cumsum(1).sub(1).masked_fill(mask.eq(0), 0).add(prefixLen);
        var prefixMask = torch.ones(b, prefixLen, dtype: ScalarType.Int64, device: mask.device);

        Tensor nextInput = seq, nextPos = pos;
        for (int step = 0; step < options.MaxNewTokens && !finished.All(f => f); step++)
        {
            using var scope = torch.NewDisposeScope();
            var fullMask = torch.cat([prefixMask, mask], 1);
            Tensor last;
            if (options.UseCache)
            {
                var o = model.Forward(new CausalLMInput { InputIds = nextInput, AttentionMask = fullMask, PositionIds = nextPos, Cache = cache });
                last = o.Logits.select(1, -1);
            }
            else
            {
                using var pc = PrefixOnly();
                var o = model.Forward(new CausalLMInput { InputIds = seq, AttentionMask = fullMask, PositionIds = pos, Cache = pc });
                last = o.Logits.select(1, -1);
            }
            last = last.to_type(ScalarType.Float32);
            stepLogits?.Add(last.clone().DetachFromDisposeScope());
            var next = options.DoSample ? Sample(last, options, gen!) : last.argmax(-1);
            var chosen = next.cpu().data<long>().ToArray();
            for (int r = 0; r < b; r++)
            {
                if (finished[r]) { chosen[r] = options.PadTokenId; continue; }
                newTokens[r].Add(chosen[r]);
                if (eos.Contains(chosen[r])) finished[r] = true;
            }
            var nextIds = torch.tensor(chosen, [b, 1], device: seq.device);
            var lastPos = pos.select(1, -1).unsqueeze(1).add(1);
            // Keep the running sequence tensors alive across steps by moving them to the outer scope.
            seq = torch.cat([seq, nextIds], 1).MoveToOuterDisposeScope();
            mask = torch.cat([mask, torch.ones(b, 1, dtype: ScalarType.Int64, device: mask.device)], 1).MoveToOuterDisposeScope();
            pos = torch.cat([pos, lastPos], 1).MoveToOuterDisposeScope();
            nextInput = nextIds.MoveToOuterDisposeScope();
            nextPos = lastPos.MoveToOuterDisposeScope();
        }
        return new GenerationResult { NewTokens = newTokens.Select(l => l.ToArray()).ToArray(), StepLogits = stepLogits };
    }

    /// <summary>Temperature, then top-k, then top-p (nucleus) filtering; samples with the seeded generator.</summary>
    public static Tensor Sample(Tensor logits, GenerationOptions o, Generator gen)
    {
        using var scope = torch.NewDisposeScope();
        var l = logits.div(Math.Max(o.Temperature, 1e-6));
        if (o.TopK > 0 && o.TopK < l.shape[^1])
        {
            var kth = l.topk(o.TopK, -1).values.narrow(-1, o.TopK - 1, 1);
            l = l.masked_fill(l.lt(kth), double.NegativeInfinity);
        }
        if (o.TopP < 1.0)
        {
            var (sorted, idx) = l.sort(-1, descending: true);
            var cum = sorted.softmax(-1).cumsum(-1);
            // Remove a token when the mass before it already reaches top_p; the first token always stays.
            var remove = cum.sub(sorted.softmax(-1)).ge(o.TopP);
            var removeOrig = torch.zeros_like(remove).scatter(-1, idx, remove);
            l = l.masked_fill(removeOrig, double.NegativeInfinity);
        }
        return torch.multinomial(l.softmax(-1), 1, false, gen).squeeze(-1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Sum and mean of log p(completion | prompt) per example, in batches with right padding.
    /// </summary>
    public static (double Sum, double Mean)[] Score(CausalLM model, IReadOnlyList<long[]> promptIds, IReadOnlyList<long[]> completionIds, int batchSize = 8)
    {
        if (promptIds.Count != completionIds.Count) throw new ArgumentException("one completion per prompt");
        var result = new (double, double)[promptIds.Count];
        using var noGrad = torch.no_grad();
        for (int start = 0; start < promptIds.Count; start += batchSize)
        {
            using var scope = torch.NewDisposeScope();
            int n = Math.Min(batchSize, promptIds.Count - start);
            int t = Enumerable.Range(start, n).Max(i => promptIds[i].Length + completionIds[i].Length);
            var ids = new long[n * t];
            var mask = new long[n * t];
            var target = new float[n * t]; // 1 where position t-1 predicts a completion token at t
            for (int r = 0; r < n; r++)
            {
                var p = promptIds[start + r];
                var c = completionIds[start + r];
                if (p.Length == 0) throw new ArgumentException($"prompt {start + r} is empty");
                for (int i = 0; i < p.Length + c.Length; i++)
                {
                    ids[r * t + i] = i < p.Length ? p[i] : c[i - p.Length];
                    mask[r * t + i] = 1;
                    if (i >= p.Length) target[r * t + i] = 1;
                }
            }
            var idT = torch.tensor(ids, [n, t], device: model.Device);
            var o = model.Forward(new CausalLMInput { InputIds = idT, AttentionMask = torch.tensor(mask, [n, t], device: model.Device) });
            var lp = o.Logits.narrow(1, 0, t - 1).to_type(ScalarType.Float64).log_softmax(-1)
                .gather(2, idT.narrow(1, 1, t - 1).unsqueeze(-1)).squeeze(-1);
            var w = torch.tensor(target, [n, t], device: model.Device).narrow(1, 1, t - 1).to_type(ScalarType.Float64);
            var sums = lp.mul(w).sum(1).cpu().data<double>().ToArray();
            for (int r = 0; r < n; r++)
            {
                int len = completionIds[start + r].Length;
                result[start + r] = (sums[r], len == 0 ? 0 : sums[r] / len);
            }
        }
        return result;
    }
}
