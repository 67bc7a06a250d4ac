using ML.Finetune.Models;

namespace ML.Finetune.Samples.Experiment;

public static class Evaluator
{
    /// <summary>Exact-match accuracy of greedy answers against the expected completion (word-normalised).</summary>
    public static (double Accuracy, List<(QaPair Pair, string Got, bool Ok)> Rows) ExactMatch(CausalLM model, LmText text, IReadOnlyList<QaPair> pairs)
    {
        var rows = new List<(QaPair, string, bool)>();
        foreach (var p in pairs)
        {
            string got = text.Generate(model, p.Prompt);
            rows.Add((p, got, got == Text.Normalize(p.Answer)));
        }
        return (pairs.Count == 0 ? 0 : rows.Count(r => r.Item3) / (double)pairs.Count, rows);
    }
}
