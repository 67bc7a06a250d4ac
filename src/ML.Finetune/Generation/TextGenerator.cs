using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Generation;

/// <summary>Greedy and sampled generation plus log-likelihood scoring on token ids.</summary>
public static partial class TextGenerator
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

    /// <summary>
    /// The last <paramref name="maxLength"/> ids of a prompt (left truncation, the end of a prompt matters most), with a
    /// leading <paramref name="bos"/> kept in front when the prompt starts with it. Training and generation both use it.
    /// </summary>
    public static long[] TruncateLeft(IReadOnlyList<long> ids, int maxLength, long? bos)
    {
        if (maxLength < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), "maxLength must be ≥ 1.");
        if (ids.Count <= maxLength) return ids.ToArray();
        bool keepBos = bos is long b && ids.Count > 0 && ids[0] == b;
        var kept = ids.Skip(ids.Count - (keepBos ? maxLength - 1 : maxLength));
        return (keepBos ? kept.Prepend(ids[0]) : kept).ToArray();
    }

    /// <summary>
    /// Generates with a finetuning method in effect. Full finetuning and LoRA act inside the model and need nothing more;
    /// prompt and prefix tuning contribute their soft prompt and KV prefix (<see cref="IFinetuneMethod.GetGenerationPrefix"/>).
    /// </summary>
    public static GenerationResult Generate(CausalLM model, IFinetuneMethod method, IReadOnlyList<long[]> prompts, GenerationOptions? options = null)
    {
        options ??= new GenerationOptions();
        var prefix = method.GetGenerationPrefix(model);
        if (prefix is null) return Generate(model, prompts, options);
        if (options.SoftPrompt is not null || options.PrefixCache is not null)
            throw new ArgumentException("the options already carry a soft prompt or prefix cache, and the method supplies its own", nameof(options));
        return Generate(model, prompts, options with { SoftPrompt = prefix.SoftPrompt, PrefixCache = prefix.PrefixCache });
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
        var soft = SoftPromptRows(model, options.SoftPrompt, b);
        long k = soft?.shape[1] ?? 0;

        // Positions follow generate(): cumsum(mask) - 1 with pads at 0, shifted by the virtual tokens in front (peft):
        // P prefix entries, then k soft-prompt rows at positions P..P+k-1.
        var seq = inputIds.alias();
        var mask = attentionMask.to_type(ScalarType.Int64);
        var pos = mask.cumsum(1).sub(1).masked_fill(mask.eq(0), 0).add(prefixLen + k);
        var prefixMask = torch.ones(b, prefixLen + k, dtype: ScalarType.Int64, device: mask.device);
        var softPos = torch.arange(prefixLen, prefixLen + k, dtype: ScalarType.Int64, device: mask.device).unsqueeze(0).expand(b, -1);

        // The whole sequence so far (the first cached step, every uncached step); the soft prompt can only enter as
        // embeddings, so later cached steps feed just the new token ids.
        CausalLMInput Whole(Tensor fullMask, KVCache? c) => soft is null
            ? new CausalLMInput { InputIds = seq, AttentionMask = fullMask, PositionIds = pos, Cache = c }
            : new CausalLMInput
            {
                InputsEmbeds = torch.cat([soft, model.EmbedTokens(seq)], 1), AttentionMask = fullMask,
                PositionIds = torch.cat([softPos, pos], 1), Cache = c,
            };

        Tensor? nextInput = null, nextPos = null;
        long cachedSeqLen = 0; // max(position)+1 of the cached keys: the rope regime they were rotated under
        for (int step = 0; step < options.MaxNewTokens && !finished.All(f => f); step++)
        {
            using var scope = torch.NewDisposeScope();
            var fullMask = torch.cat([prefixMask, mask], 1);
            Tensor logits;
            if (!options.UseCache)
            {
                using var pc = PrefixOnly();
                logits = model.Forward(Whole(fullMask, pc)).Logits;
            }
            else if (nextInput is null || model.Config.RopeSwitchesBetween(cachedSeqLen, nextPos!.max().item<long>() + 1))
            {
                // The first step, or LongRoPE passing original_max_position_embeddings: every key is rotated anew
                // (transformers recomputes the cache at that point, as in its no-cache loop).
                if (nextInput is not null) cache!.Reset(options.PrefixCache?.Invoke(b));
                logits = model.Forward(Whole(fullMask, cache)).Logits;
                cachedSeqLen = pos.max().item<long>() + 1;
            }
            else
            {
                logits = model.Forward(new CausalLMInput { InputIds = nextInput, AttentionMask = fullMask, PositionIds = nextPos, Cache = cache }).Logits;
                cachedSeqLen = Math.Max(cachedSeqLen, nextPos!.max().item<long>() + 1);
            }
            var last = logits.select(1, -1).to_type(ScalarType.Float32);
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

    /// <summary>The soft prompt [k, d] as [B, k, d] in the model's dtype and device (null when there is none).</summary>
    static Tensor? SoftPromptRows(CausalLM model, Tensor? softPrompt, int batch)
    {
        if (softPrompt is null) return null;
        if (softPrompt.dim() != 2 || softPrompt.shape[1] != model.Config.HiddenSize)
            throw new ArgumentException($"the soft prompt must be [k, {model.Config.HiddenSize}], got [{string.Join(",", softPrompt.shape)}]");
        return softPrompt.to(model.Device).to_type(model.ComputeDType).unsqueeze(0).expand(batch, -1, -1);
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
