namespace ML.Finetune.Samples.Experiment;

/// <summary>
/// The "pretraining" text that gives θ_p its knowledge: every fact (train AND test universities) written in many
/// paraphrases, in a seeded mixed order. Storing a fact in a single template leaves it in a form finetuning cannot
/// extract for new entities; many templates (with the university and the city in varying positions) make the
/// knowledge extractable. QA-format text about another relation (the state) teaches the "Q: … A: …" format, so the
/// QA form for the city relation itself is only ever seen at finetuning time, on the train split.
/// </summary>
public sealed class PretrainingCorpusBuilder
{
    /// <summary>Templates for the city relation. {U} university, {C} city, {S} state.</summary>
    public static readonly string[] CityTemplates =
    [
        "{U} is located in {C}.",
        "{C} is home to {U}.",
        "The campus of {U} is in {C}, {S}.",
        "{U}, a university in {C}, welcomes new students every year.",
        "If you visit {C}, you can see {U}.",
        "Students at {U} live in {C}.",
        "{U} has its main campus in the city of {C}.",
        "One of the universities in {C} is {U}.",
        "The city where {U} is located is {C}.",
        "Many people in {C} work at {U}.",
    ];

    /// <summary>Templates for the state relation (a different relation, also in QA format).</summary>
    public static readonly string[] StateTemplates =
    [
        "{U} is a university in the state of {S}.",
        "Q: Which state is {U} in? A: {S}",
        "{S} is the state where {U} can be found.",
    ];

    /// <summary>Generic text in the QA format about other relations (no university knowledge involved).</summary>
    public static readonly string[] GenericQa =
    [
        "Q: What is a university? A: a school",
        "Q: Which state is {C} in? A: {S}",
    ];

    public PretrainingCorpusBuilder(int seed = 0, int cityTemplates = int.MaxValue, bool includeQaFormat = true)
    {
        Seed = seed;
        CityTemplateCount = Math.Clamp(cityTemplates, 1, CityTemplates.Length);
        IncludeQaFormat = includeQaFormat;
    }

    public int Seed { get; }
    public int CityTemplateCount { get; }
    public bool IncludeQaFormat { get; }

    static string Fill(string t, UniversityFact f) => t.Replace("{U}", f.University).Replace("{C}", f.City).Replace("{S}", f.State);

    /// <summary>All sentences, shuffled with the seed. Each fact appears in every city template.</summary>
    public IReadOnlyList<string> Build(IEnumerable<UniversityFact> facts)
    {
        var list = new List<string>();
        var all = facts.ToList();
        foreach (var f in all)
        {
            for (int i = 0; i < CityTemplateCount; i++) list.Add(Fill(CityTemplates[i], f));
            foreach (var t in StateTemplates)
                if (IncludeQaFormat || !t.StartsWith("Q:")) list.Add(Fill(t, f));
        }
        if (IncludeQaFormat)
        {
            list.Add(GenericQa[0]);
            foreach (var f in all.DistinctBy(f => f.City)) list.Add(Fill(GenericQa[1], f));
        }
        var rng = new Random(Seed);
        var arr = list.ToArray();
        rng.Shuffle(arr);
        return arr;
    }

    /// <summary>Every word the model must know: corpus words plus the QA task's words (punctuation split off).</summary>
    public static IReadOnlyList<string> Vocabulary(IEnumerable<string> sentences, IEnumerable<UniversityFact> facts)
    {
        var words = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var s in sentences) foreach (var w in Text.Words(s)) words.Add(w);
        foreach (var f in facts) foreach (var w in Text.Words(QaBuilder.Prompt(f.University) + " " + f.City)) words.Add(w);
        return words.ToList();
    }
}
