using System.Text.Json;

namespace ML.Finetune.Samples.Experiment;

/// <summary>Reads prompt/completion training data: JSONL ({"prompt": …, "completion": …} per line) or CSV with a header prompt,completion.</summary>
public static class PromptCompletionFile
{
    public static IReadOnlyList<QaPair> Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"data file not found: {path}", path);
        var lines = File.ReadAllLines(path);
        string ext = Path.GetExtension(path).ToLowerInvariant();
        var pairs = ext switch
        {
            ".jsonl" or ".json" => Jsonl(lines, path),
            ".csv" => Csv(lines, path),
            _ => throw new InvalidDataException($"{path}: unsupported data file extension '{ext}' (use .jsonl or .csv)"),
        };
        if (pairs.Count == 0) throw new InvalidDataException($"{path}: no examples");
        return pairs;
    }

    static List<QaPair> Jsonl(string[] lines, string path)
    {
        var r = new List<QaPair>();
        for (int i = 0; i < lines.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            try
            {
                using var doc = JsonDocument.Parse(lines[i]);
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}:{i + 1}: expected a JSON object");
                string Field(string n) => doc.RootElement.TryGetProperty(n, out var v) && v.ValueKind == JsonValueKind.String
                    ? v.GetString()! : throw new InvalidDataException($"{path}:{i + 1}: field '{n}' is missing or not a string");
                r.Add(new QaPair(Field("prompt"), Field("completion")));
            }
            catch (JsonException e) { throw new InvalidDataException($"{path}:{i + 1}: not valid JSON: {e.Message}", e); }
        }
        return r;
    }

    static List<QaPair> Csv(string[] lines, string path)
    {
        if (lines.Length == 0) throw new InvalidDataException($"{path}:1: empty file; expected a header 'prompt,completion'");
        var header = SplitCsv(lines[0], path, 1).Select(h => h.Trim().ToLowerInvariant()).ToList();
        int pi = header.IndexOf("prompt"), ci = header.IndexOf("completion");
        if (pi < 0 || ci < 0) throw new InvalidDataException($"{path}:1: header must contain 'prompt' and 'completion'");
        var r = new List<QaPair>();
        for (int i = 1; i < lines.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            var cells = SplitCsv(lines[i], path, i + 1);
            if (cells.Count != header.Count) throw new InvalidDataException($"{path}:{i + 1}: expected {header.Count} columns, found {cells.Count}");
            r.Add(new QaPair(cells[pi], cells[ci]));
        }
        return r;
    }

    /// <summary>One CSV record (RFC 4180 quoting, no embedded newlines).</summary>
    static List<string> SplitCsv(string line, string path, int n)
    {
        var cells = new List<string>();
        var cur = new System.Text.StringBuilder();
        bool quoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < line.Length && line[i + 1] == '"') { cur.Append('"'); i++; }
                else if (c == '"') quoted = false;
                else cur.Append(c);
            }
            else if (c == '"' && cur.Length == 0) quoted = true;
            else if (c == ',') { cells.Add(cur.ToString()); cur.Clear(); }
            else cur.Append(c);
        }
        if (quoted) throw new InvalidDataException($"{path}:{n}: unterminated quoted field");
        cells.Add(cur.ToString());
        return cells;
    }
}
