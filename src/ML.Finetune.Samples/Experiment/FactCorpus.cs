using System.Security.Cryptography;
using System.Text;

namespace ML.Finetune.Samples.Experiment;

/// <summary>One fact row: a university, its city and state, and whether it is finetuned on (train) or held out (test).</summary>
public sealed record UniversityFact(string University, string City, string State, string Split);

/// <summary>Loads and validates the university facts TSV (columns university, city, state, split).</summary>
public sealed class FactCorpus
{
    public static readonly string[] Columns = ["university", "city", "state", "split"];

    public FactCorpus(IReadOnlyList<UniversityFact> facts, string source)
    {
        Facts = facts;
        Source = source;
    }

    public IReadOnlyList<UniversityFact> Facts { get; }
    public string Source { get; }
    public IReadOnlyList<UniversityFact> Train => Facts.Where(f => f.Split == "train").ToList();
    public IReadOnlyList<UniversityFact> Test => Facts.Where(f => f.Split == "test").ToList();
    public IReadOnlyList<UniversityFact> Split(string split) => Facts.Where(f => f.Split == split).ToList();

    /// <summary>Throws when <paramref name="split"/> has no rows: an accuracy over no questions is not 0%.</summary>
    public void RequireSplit(string split)
    {
        if (Split(split).Count == 0)
            throw new InvalidDataException($"{Source}: no rows with split '{split}' (column 'split'); " +
                                           (split == "test" ? "the held-out evaluation needs at least one" : "finetuning needs at least one"));
    }

    /// <summary>The facts as canonical text (order-independent of whitespace quirks in the file); its SHA-256 names a pretrained model's knowledge.</summary>
    public string Hash()
    {
        var sb = new StringBuilder();
        foreach (var f in Facts) sb.Append(f.University).Append('\t').Append(f.City).Append('\t').Append(f.State).Append('\t').Append(f.Split).Append('\n');
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString()))).ToLowerInvariant();
    }

    /// <summary>A corpus with only the first <paramref name="train"/> train and <paramref name="test"/> test facts (reduced runs).</summary>
    public FactCorpus Take(int train, int test) =>
        new(Train.Take(train).Concat(Test.Take(test)).ToList(), Source + $" (first {train} train, {test} test)");

    public static FactCorpus Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"facts file not found: {path}", path);
        return Parse(File.ReadAllLines(path), path);
    }

    public static FactCorpus Parse(IReadOnlyList<string> lines, string source = "facts.tsv")
    {
        if (lines.Count == 0 || string.IsNullOrWhiteSpace(lines[0])) throw new InvalidDataException($"{source}:1: empty file; expected a header '{string.Join("\\t", Columns)}'");
        var header = lines[0].Split('\t').Select(h => h.Trim().ToLowerInvariant()).ToArray();
        var idx = Columns.Select(c => Array.IndexOf(header, c)).ToArray();
        for (int i = 0; i < Columns.Length; i++)
            if (idx[i] < 0) throw new InvalidDataException($"{source}:1: header lacks column '{Columns[i]}' (found: {string.Join(", ", header)})");
        var facts = new List<UniversityFact>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int n = 1; n < lines.Count; n++)
        {
            string line = lines[n];
            if (string.IsNullOrWhiteSpace(line)) continue;
            var cells = line.Split('\t');
            if (cells.Length != header.Length)
                throw new InvalidDataException($"{source}:{n + 1}: expected {header.Length} tab-separated columns, found {cells.Length}");
            string Get(int c)
            {
                string v = cells[idx[c]].Trim();
                if (v.Length == 0) throw new InvalidDataException($"{source}:{n + 1}: column '{Columns[c]}' is empty");
                return string.Join(' ', v.Split(' ', StringSplitOptions.RemoveEmptyEntries));
            }
            var f = new UniversityFact(Get(0), Get(1), Get(2), Get(3).ToLowerInvariant());
            if (f.Split is not ("train" or "test"))
                throw new InvalidDataException($"{source}:{n + 1}: column 'split' must be 'train' or 'test', got '{f.Split}'");
            if (!seen.Add(f.University)) throw new InvalidDataException($"{source}:{n + 1}: university '{f.University}' appears twice");
            facts.Add(f);
        }
        if (facts.Count == 0) throw new InvalidDataException($"{source}: no fact rows after the header");
        return new FactCorpus(facts, source);
    }
}
