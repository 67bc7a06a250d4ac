using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Samples.Experiment;

public sealed record MiniTrainOptions
{
    public int Steps { get; init; } = 300;
    public int BatchSize { get; init; } = 16;
    public double LearningRate { get; init; } = 1e-3;
    public int WarmupSteps { get; init; } = 20;
    public double WeightDecay { get; init; } = 0.0;
    public long Seed { get; init; }
    /// <summary>β of the penalty β·‖θ−θ_p‖² (needs Reference).</summary>
    public double L2Beta { get; init; }
    /// <summary>λ of the penalty λ·KL(p_θp ‖ p_θ) on KlSequences (needs Reference).</summary>
    public double KlLambda { get; init; }
    public IReadOnlyList<TokenSequence>? KlSequences { get; init; }
    public CausalLM? Reference { get; init; }
}

/// <summary>
/// A minimal next-token trainer (AdamW, linear warmup then cosine decay, seeded batch order) used for pretraining θ_p
/// in the samples project. Loss: mean CE over the positions marked InLoss (+ optional L2 / KL to a reference model).
/// </summary>
public static class MiniTrainer
{
    public static List<(int Step, double Loss)> Train(CausalLM model, LmText text, IReadOnlyList<TokenSequence> data,
        MiniTrainOptions o, Action<int, double>? progress = null)
    {
        torch.manual_seed(o.Seed);
        model.train();
        var parameters = model.parameters().Where(p => p.requires_grad).ToList();
        var refParams = o.Reference?.parameters().ToList();
        using var opt = torch.optim.AdamW(parameters, o.LearningRate, weight_decay: o.WeightDecay);
        var rng = new Random((int)o.Seed);
        var order = Enumerable.Range(0, data.Count).ToArray();
        int cursor = order.Length;
        var history = new List<(int, double)>();
        for (int step = 0; step < o.Steps; step++)
        {
            using var scope = torch.NewDisposeScope();
            double lr = o.LearningRate * (step < o.WarmupSteps ? (step + 1.0) / o.WarmupSteps
                : 0.5 * (1 + Math.Cos(Math.PI * (step - o.WarmupSteps) / Math.Max(1, o.Steps - o.WarmupSteps))));
            foreach (var g in opt.ParamGroups) g.LearningRate = lr;
            var batch = new List<TokenSequence>(o.BatchSize);
            while (batch.Count < Math.Min(o.BatchSize, data.Count))
            {
                if (cursor >= order.Length) { rng.Shuffle(order); cursor = 0; }
                batch.Add(data[order[cursor++]]);
            }
            var (ids, labels) = text.Batch(batch);
            var logits = model.Forward(new CausalLMInput { InputIds = ids }).Logits;
            var v = logits.shape[2];
            var loss = nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, v), labels.reshape(-1), ignore_index: -100);
            double ce = loss.item<float>();
            if (o.L2Beta > 0 && refParams != null)
            {
                Tensor sq = torch.zeros(1);
                foreach (var (p, r) in parameters.Zip(refParams)) sq = sq + (p - r.detach()).pow(2).sum();
                loss = loss + o.L2Beta * sq.squeeze();
            }
            if (o.KlLambda > 0 && o.Reference != null && o.KlSequences is { Count: > 0 } kl)
            {
                var klBatch = Enumerable.Range(0, Math.Min(o.BatchSize, kl.Count)).Select(_ => kl[rng.Next(kl.Count)]).ToList();
                var (kIds, kLabels) = text.Batch(klBatch);
                loss = loss + o.KlLambda * Kl(model, o.Reference, kIds, kLabels);
            }
            opt.zero_grad();
            loss.backward();
            nn.utils.clip_grad_norm_(parameters, 1.0);
            opt.step();
            history.Add((step, ce));
            progress?.Invoke(step, ce);
        }
        model.eval();
        return history;
    }

    /// <summary>Mean over target positions of KL(p_ref ‖ p_model) for next-token distributions.</summary>
    public static Tensor Kl(CausalLM model, CausalLM reference, Tensor ids, Tensor labels)
    {
        var logp = model.Forward(new CausalLMInput { InputIds = ids }).Logits[.., ..^1].log_softmax(-1);
        Tensor logq;
        using (torch.no_grad()) logq = reference.Forward(new CausalLMInput { InputIds = ids }).Logits[.., ..^1].log_softmax(-1);
        var perPos = (logq.exp() * (logq - logp)).sum(-1);
        var mask = labels.ne(-100).to(perPos.dtype);
        return (perPos * mask).sum() / mask.sum().clamp_min(1);
    }

    /// <summary>Mean per-token KL(p_ref ‖ p_model) over all sequences (evaluation).</summary>
    public static double MeanKl(CausalLM model, CausalLM reference, LmText text, IReadOnlyList<TokenSequence> seqs, int batch = 64)
    {
        using var _ = torch.no_grad();
        double sum = 0; long n = 0;
        for (int i = 0; i < seqs.Count; i += batch)
        {
            using var scope = torch.NewDisposeScope();
            var part = seqs.Skip(i).Take(batch).ToList();
            var (ids, labels) = text.Batch(part);
            long cnt = labels.ne(-100).sum().item<long>();
            sum += Kl(model, reference, ids, labels).item<float>() * cnt;
            n += cnt;
        }
        return n == 0 ? 0 : sum / n;
    }

    /// <summary>‖θ − θ_p‖₂ over all parameters.</summary>
    public static double Distance(CausalLM model, CausalLM reference)
    {
        using var _ = torch.no_grad();
        double sq = 0;
        foreach (var (p, r) in model.parameters().Zip(reference.parameters())) sq += (p - r).pow(2).sum().item<float>();
        return Math.Sqrt(sq);
    }
}
