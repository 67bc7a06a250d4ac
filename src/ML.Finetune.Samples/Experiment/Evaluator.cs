using ML.Finetune.Models;

namespace ML.Finetune.Samples.Experiment;

public static class Evaluator
{
    /// <summary>Exact-match accuracy of greedy answers against the expected completion (word-normalised).</summary>
    /// <summary>Exact match with greedy decoding through a logits function (no cache, one prompt at a time).</summary>
    public static (double Accuracy, List<(QaPair Pair, string Got, bool Ok)> Rows) ExactMatch(
        Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor, TorchSharp.torch.Tensor> logitsOf, LmText text, IReadOnlyList<QaPair> pairs)
    {
        var rows = new List<(QaPair, string, bool)>();
        foreach (var p in pairs)
        {
            string got = text.Generate(logitsOf, p.Prompt);
            rows.Add((p, got, got == Text.Normalize(p.Answer)));
        }
        return (pairs.Count == 0 ? 0 : rows.Count(r => r.Item3) / (double)pairs.Count, rows);
    }

    public static (double Accuracy, List<(QaPair Pair, string Got, bool Ok)> Rows) ExactMatch(CausalLM model, LmText text, IReadOnlyList<QaPair> pairs)
    {
        var rows = new List<(QaPair, string, bool)>();
        var answers = text.GenerateBatch(model, pairs.Select(p => p.Prompt).ToList());
        for (int i = 0; i < pairs.Count; i++) rows.Add((pairs[i], answers[i], answers[i] == Text.Normalize(pairs[i].Answer)));
        return (pairs.Count == 0 ? 0 : rows.Count(r => r.Item3) / (double)pairs.Count, rows);
    }
}
