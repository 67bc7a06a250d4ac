using ML.Finetune.Samples.Experiment;

namespace ML.Finetune.Tests.MainJob;

public class CorpusTests
{
    static readonly string[] Good =
    [
        "university\tcity\tstate\tsplit",
        "Alpha University\tSpringfield\tIllinois\ttrain",
        "Beta College\tNew York City\tNew York\ttest",
        "Gamma Institute\tWinston-Salem\tNorth Carolina\ttrain",
    ];

    [Fact]
    public void Parses_facts_and_splits()
    {
        var c = FactCorpus.Parse(Good);
        Assert.Equal(3, c.Facts.Count);
        Assert.Equal(2, c.Train.Count);
        Assert.Equal("New York City", Assert.Single(c.Test).City);
    }

    [Fact]
    public void Shipped_facts_file_loads()
    {
        var c = FactCorpus.Load(Path.Combine(AppContext.BaseDirectory, "Data", "universities.tsv"));
        Assert.Equal(111, c.Facts.Count);
        Assert.True(c.Train.Count > 0 && c.Test.Count > 0);
    }

    [Theory]
    [InlineData("university\tcity\tsplit", "facts.tsv:1", "state")]
    [InlineData("university\tcity\tstate\tsplit\nA U\tX\tY", "facts.tsv:2", "columns")]
    [InlineData("university\tcity\tstate\tsplit\nA U\tX\tY\ttrain\nB U\tX\tY\tdev", "facts.tsv:3", "split")]
    [InlineData("university\tcity\tstate\tsplit\nA U\t\tY\ttrain", "facts.tsv:2", "city")]
    [InlineData("university\tcity\tstate\tsplit\nA U\tX\tY\ttrain\nA U\tZ\tY\ttest", "facts.tsv:3", "twice")]
    public void Malformed_facts_name_the_line(string content, string where, string what)
    {
        var e = Assert.Throws<InvalidDataException>(() => FactCorpus.Parse(content.Split('\n')));
        Assert.StartsWith(where + ":", e.Message);
        Assert.Contains(what, e.Message);
    }

    [Fact]
    public void Pretraining_corpus_has_every_fact_in_several_templates_seeded()
    {
        var c = FactCorpus.Parse(Good);
        var s1 = new PretrainingCorpusBuilder(seed: 5).Build(c.Facts);
        var s2 = new PretrainingCorpusBuilder(seed: 5).Build(c.Facts);
        var s3 = new PretrainingCorpusBuilder(seed: 6).Build(c.Facts);
        Assert.Equal(s1, s2);
        Assert.NotEqual(s1, s3);
        Assert.Equal(s1.OrderBy(x => x), s3.OrderBy(x => x));
        foreach (var f in c.Facts) // train AND test universities: the knowledge pretraining provides
        {
            var withCity = s1.Where(x => x.Contains(f.University) && x.Contains(f.City)).ToList();
            Assert.True(withCity.Count >= 5, $"{f.University}: {withCity.Count} sentences");
            Assert.True(withCity.Select(x => x.IndexOf(f.City) < x.IndexOf(f.University)).Distinct().Count() == 2, "city both before and after the name");
        }
        // The QA format appears only for other relations: never "Where is … ?" with the city.
        Assert.DoesNotContain(s1, x => x.Contains("Where is"));
        Assert.Contains(s1, x => x.StartsWith("Q: Which state is"));
        // Not grouped by fact: the first sentences mention more than one university.
        Assert.True(c.Facts.Count(f => s1.Take(6).Any(x => x.Contains(f.University))) > 1);
    }

    [Fact]
    public void Qa_pairs_and_vocabulary()
    {
        var c = FactCorpus.Parse(Good);
        var test = QaBuilder.Build(c, "test");
        var p = Assert.Single(test);
        Assert.Equal("Q: Where is Beta College? A:", p.Prompt);
        Assert.Equal(" New York City", p.Completion);
        Assert.Equal("New York City", p.Answer);
        Assert.Equal(2, QaBuilder.Build(c, "train").Count);
        Assert.Equal("Q : Where is Beta College ? A :", Text.Normalize(p.Prompt));
        var vocab = PretrainingCorpusBuilder.Vocabulary(new PretrainingCorpusBuilder().Build(c.Facts), c.Facts);
        foreach (var w in new[] { "Q", ":", "Where", "?", "A", "Winston", "-", "Salem", "." }) Assert.Contains(w, vocab);
        Assert.Equal(vocab.Count, vocab.Distinct().Count());
    }

    [Fact]
    public void Data_file_errors_name_the_line()
    {
        string dir = Directory.CreateTempSubdirectory("mlft-data").FullName;
        try
        {
            string j = Path.Combine(dir, "d.jsonl");
            File.WriteAllLines(j, ["{\"prompt\":\"a\",\"completion\":\" b\"}", "", "{\"prompt\":\"a\"}"]);
            var e = Assert.Throws<InvalidDataException>(() => PromptCompletionFile.Load(j));
            Assert.Contains("d.jsonl:3:", e.Message);
            Assert.Contains("completion", e.Message);
            File.WriteAllLines(j, ["{\"prompt\":\"a\",\"completion\":\" b\"}", "{not json"]);
            Assert.Contains("d.jsonl:2:", Assert.Throws<InvalidDataException>(() => PromptCompletionFile.Load(j)).Message);
            string csv = Path.Combine(dir, "d.csv");
            File.WriteAllLines(csv, ["prompt,completion", "\"Q: x, y? A:\",\" z\"", "only-one-cell"]);
            Assert.Contains("d.csv:3:", Assert.Throws<InvalidDataException>(() => PromptCompletionFile.Load(csv)).Message);
            File.WriteAllLines(csv, ["prompt,completion", "\"Q: x, y? A:\",\" z\""]);
            var ok = Assert.Single(PromptCompletionFile.Load(csv));
            Assert.Equal("Q: x, y? A:", ok.Prompt);
        }
        finally { Directory.Delete(dir, true); }
    }
}
