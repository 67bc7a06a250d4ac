using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Samples.Experiment;

/// <summary>Report metrics: KL to θ_p on pretraining text and the weight distance between two models.</summary>
public static class Metrics
{
    /// <summary>Mean over target positions of KL(p_ref ‖ p_model) for next-token distributions.</summary>
    public static Tensor Kl(CausalLM model, CausalLM reference, Tensor ids, Tensor labels) =>
        Kl(i => model.Forward(new CausalLMInput { InputIds = i }).Logits, reference, ids, labels);

    public static Tensor Kl(Func<Tensor, Tensor> logitsOf, CausalLM reference, Tensor ids, Tensor labels)
    {
        var logp = logitsOf(ids)[.., ..^1].log_softmax(-1);
        Tensor logq;
        using (torch.no_grad()) logq = reference.Forward(new CausalLMInput { InputIds = ids }).Logits[.., ..^1].log_softmax(-1);
        var perPos = (logq.exp() * (logq - logp)).sum(-1);
        var mask = labels.ne(-100).to(perPos.dtype);
        return (perPos * mask).sum() / mask.sum().clamp_min(1);
    }

    /// <summary>Mean per-token KL(p_ref ‖ p_model) over all sequences (evaluation).</summary>
    public static double MeanKl(CausalLM model, CausalLM reference, LmText text, IReadOnlyList<TokenSequence> seqs, int batch = 64) =>
        MeanKl(i => model.Forward(new CausalLMInput { InputIds = i }).Logits, reference, text, seqs, batch);

    /// <summary>Right-padded batches; pads come after every target, so causal logits of real positions are unaffected.</summary>
    public static double MeanKl(Func<Tensor, Tensor> logitsOf, CausalLM reference, LmText text, IReadOnlyList<TokenSequence> seqs, int batch = 64)
    {
        using var _ = torch.no_grad();
        double sum = 0; long n = 0;
        for (int i = 0; i < seqs.Count; i += batch)
        {
            using var scope = torch.NewDisposeScope();
            var part = seqs.Skip(i).Take(batch).ToList();
            var (ids, labels) = text.Batch(part);
            long cnt = labels.ne(-100).sum().item<long>();
            sum += Kl(logitsOf, reference, ids, labels).item<float>() * cnt;
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
