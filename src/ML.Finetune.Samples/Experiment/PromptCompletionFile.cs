using System.Text.Json;

namespace ML.Finetune.Samples.Experiment;

/// <summary>A prompt/completion pair and the 1-based line of the file it came from.</summary>
public sealed record PromptCompletionLine(QaPair Pair, int Line);

/// <summary>
/// Reads prompt/completion training data: JSONL (one object per line with string fields "prompt" and "completion"; other
/// fields are ignored) or CSV with a header row naming the columns prompt and completion (RFC 4180 quoting, one record
/// per line). Errors name the file and the 1-based line.
/// </summary>
public static class PromptCompletionFile
{
    public const string Fields = "fields \"prompt\" and \"completion\"";

    public static IReadOnlyList<QaPair> Load(string path) => LoadLines(path).Select(l => l.Pair).ToList();

    public static IReadOnlyList<PromptCompletionLine> LoadLines(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"data file not found: {path}", path);
        var lines = File.ReadAllLines(path);
        string ext = Path.GetExtension(path).ToLowerInvariant();
        var pairs = ext switch
        {
            ".jsonl" or ".json" => Jsonl(lines, path),
            ".csv" => Csv(lines, path),
            _ => throw new InvalidDataException($"{path}: unsupported data file extension '{ext}' (use .jsonl or .csv with {Fields})"),
        };
        if (pairs.Count == 0) throw new InvalidDataException($"{path}: no examples (expected {Fields})");
        return pairs;
    }

    static List<PromptCompletionLine> Jsonl(string[] lines, string path)
    {
        var r = new List<PromptCompletionLine>();
        for (int i = 0; i < lines.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            using (var doc = ParseJsonLine(lines[i], path, i + 1))
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}:{i + 1}: expected a JSON object with {Fields}");
                string Field(string n) => doc.RootElement.TryGetProperty(n, out var v) && v.ValueKind == JsonValueKind.String
                    ? v.GetString()! : throw new InvalidDataException($"{path}:{i + 1}: field \"{n}\" is missing or not a string (expected {Fields})");
                r.Add(new PromptCompletionLine(new QaPair(Field("prompt"), Field("completion")), i + 1));
            }
        }
        return r;
    }

    /// <summary>One JSONL line as a JSON document; invalid JSON is an error naming the file, the 1-based line and the byte.</summary>
    internal static JsonDocument ParseJsonLine(string line, string path, int lineNumber)
    {
        try { return JsonDocument.Parse(line); }
        catch (JsonException e)
        {
            // System.Text.Json appends its own position ("LineNumber: 0 | BytePositionInLine: n"): one JSONL line is one
            // document, so only the byte position within the line is worth keeping.
            string reason = e.Message;
            int cut = reason.IndexOf(" Path:", StringComparison.Ordinal) is int a && a >= 0 ? a : reason.IndexOf(" LineNumber:", StringComparison.Ordinal);
            if (cut >= 0) reason = reason[..cut];
            string at = e.BytePositionInLine is long b ? $" at byte {b + 1}" : "";
            throw new InvalidDataException($"{path}:{lineNumber}: not valid JSON{at}: {reason.TrimEnd('.', ' ')}");
        }
    }

    static List<PromptCompletionLine> Csv(string[] lines, string path)
    {
        if (lines.Length == 0) throw new InvalidDataException($"{path}:1: empty file; expected a header 'prompt,completion'");
        var header = SplitCsv(lines[0], path, 1).Select(h => h.Trim().ToLowerInvariant()).ToList();
        int pi = header.IndexOf("prompt"), ci = header.IndexOf("completion");
        if (pi < 0 || ci < 0) throw new InvalidDataException($"{path}:1: header must contain 'prompt' and 'completion'");
        var r = new List<PromptCompletionLine>();
        for (int i = 1; i < lines.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            var cells = SplitCsv(lines[i], path, i + 1);
            if (cells.Count != header.Count) throw new InvalidDataException($"{path}:{i + 1}: expected {header.Count} columns, found {cells.Count}");
            r.Add(new PromptCompletionLine(new QaPair(cells[pi], cells[ci]), i + 1));
        }
        return r;
    }

    /// <summary>One CSV record (RFC 4180 quoting, no embedded newlines).</summary>
    internal static List<string> SplitCsv(string line, string path, int n)
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
