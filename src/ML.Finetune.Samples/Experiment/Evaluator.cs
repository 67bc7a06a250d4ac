using ML.Finetune.Models;
using ML.Finetune.Training;

namespace ML.Finetune.Samples.Experiment;

public static class Evaluator
{
    /// <summary>
    /// Exact-match accuracy of greedy answers against the expected completion (word-normalised), generated in KV-cached
    /// batches. <paramref name="method"/>: the prompt/prefix tuning method in effect (null when the model alone answers).
    /// </summary>
    public static (double Accuracy, List<(QaPair Pair, string Got, bool Ok)> Rows) ExactMatch(CausalLM model, LmText text, IReadOnlyList<QaPair> pairs,
        IFinetuneMethod? method = null)
    {
        var rows = new List<(QaPair, string, bool)>();
        var answers = text.GenerateBatch(model, method, pairs.Select(p => p.Prompt).ToList());
        for (int i = 0; i < pairs.Count; i++) rows.Add((pairs[i], answers[i], answers[i] == Text.Normalize(pairs[i].Answer)));
        return (pairs.Count == 0 ? 0 : rows.Count(r => r.Item3) / (double)pairs.Count, rows);
    }
}
