namespace ML.Finetune.Samples.Experiment;

/// <summary>A prompt/completion pair. Completion starts with a space, as in "Q: Where is X? A:" / " City".</summary>
public sealed record QaPair(string Prompt, string Completion)
{
    /// <summary>The expected answer without the leading space.</summary>
    public string Answer => Completion.Trim();
}

/// <summary>Builds the finetuning/evaluation task: "Q: Where is &lt;university&gt;? A:" → " &lt;city&gt;".</summary>
public static class QaBuilder
{
    public static string Prompt(string university) => $"Q: Where is {university}? A:";

    public static QaPair For(UniversityFact f) => new(Prompt(f.University), " " + f.City);

    public static IReadOnlyList<QaPair> Build(IEnumerable<UniversityFact> facts) => facts.Select(For).ToList();

    public static IReadOnlyList<QaPair> Build(FactCorpus corpus, string split) => Build(corpus.Split(split));
}
