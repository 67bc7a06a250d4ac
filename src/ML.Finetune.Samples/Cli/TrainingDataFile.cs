using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using ML.Finetune.Chat;
using ML.Finetune.Estimators;
using ML.Finetune.Samples.Experiment;

namespace ML.Finetune.Samples.Cli;

/// <summary>One example of a data file and its 1-based line (a .txt paragraph: its first line).</summary>
public sealed record DataLine(int Line, string? Prompt = null, string? Completion = null, IReadOnlyList<ChatMessage>? Messages = null, string? Text = null);

/// <summary>
/// A training (or validation, evaluation) data file in any of the three formats, detected from the file:
/// <list type="bullet">
/// <item>.jsonl (or .json, one object per line): <c>{"messages": [...]}</c> conversations, <c>{"text": ...}</c> plain text, or
/// <c>{"prompt": ..., "completion": ...}</c>; the first example decides and every line must then be of that format;</item>
/// <item>.csv: a header naming <c>prompt,completion</c>, <c>text</c> or <c>messages</c> (a conversation as JSON in the cell);</item>
/// <item>.txt: plain text, one example per paragraph (blocks of lines separated by blank lines, as Hugging Face datasets'
/// <c>sample_by="paragraph"</c>); a paragraph longer than --max-length is split into windows when training.</item>
/// </list>
/// Errors name the file and the 1-based line.
/// </summary>
public sealed record TrainingDataFile(string Path, FinetuneDataFormat Format, string Detected, IReadOnlyList<DataLine> Lines)
{
    public const string Help = "training data, format detected from the file: .jsonl, one object per line with a field \"messages\" " +
        "([{\"role\", \"content\"}, ...]: conversations), \"text\" (plain text) or fields \"prompt\" and \"completion\" (the " +
        "completion is what the model learns to write after the prompt); .csv with a header row prompt,completion, text or messages; " +
        ".txt: plain text, one example per blank-line-separated paragraph";

    /// <summary>"4 conversations (.jsonl, field \"messages\")".</summary>
    public string Summary => $"{Lines.Count} {Noun(Format, Lines.Count)} ({Detected})";

    public static string Noun(FinetuneDataFormat f, int n) => f switch
    {
        FinetuneDataFormat.Conversation => n == 1 ? "conversation" : "conversations",
        FinetuneDataFormat.Text => n == 1 ? "text" : "texts",
        _ => n == 1 ? "prompt/completion pair" : "prompt/completion pairs",
    };

    public static TrainingDataFile Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"data file not found: {path}", path);
        string ext = System.IO.Path.GetExtension(path).ToLowerInvariant();
        var file = ext switch
        {
            ".jsonl" or ".json" => Jsonl(path),
            ".csv" => Csv(path),
            ".txt" => Paragraphs(path),
            _ => throw new InvalidDataException($"{path}: unsupported data file extension '{ext}' (use .jsonl, .csv or .txt; {Help})"),
        };
        if (file.Lines.Count == 0) throw new InvalidDataException($"{path}: no examples ({Help})");
        return file;
    }

    /// <summary>The file's examples (or a subset of them) as an IDataView with the estimator's default column names.</summary>
    public IDataView ToDataView(MLContext ml, IEnumerable<DataLine>? lines = null)
    {
        var rows = lines ?? Lines;
        return Format switch
        {
            FinetuneDataFormat.Conversation => ml.Data.LoadFromEnumerable(rows.Select(l => new Commands.MessagesRow { Messages = ChatConversation.ToJson(l.Messages!) })),
            FinetuneDataFormat.Text => ml.Data.LoadFromEnumerable(rows.Select(l => new Commands.TextRow { Text = l.Text! })),
            _ => ml.Data.LoadFromEnumerable(rows.Select(l => new Commands.PromptCompletionRow { Prompt = l.Prompt!, Completion = l.Completion! })),
        };
    }

    static TrainingDataFile Jsonl(string path)
    {
        var lines = File.ReadAllLines(path);
        FinetuneDataFormat? format = null;
        int first = 0;
        var result = new List<DataLine>();
        for (int i = 0; i < lines.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            using var doc = PromptCompletionFile.ParseJsonLine(lines[i], path, i + 1);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{path}:{i + 1}: expected a JSON object with \"messages\", \"text\" or \"prompt\" and \"completion\"");
            var mine = LineFormat(root, path, i + 1);
            if (format is null) { format = mine; first = i + 1; }
            else if (mine != format)
                throw new InvalidDataException($"{path}:{i + 1}: this line holds {Noun(mine, 2)} but line {first} holds {Noun(format.Value, 2)}; " +
                                               "a data file holds one format");
            string String(string n) => root.TryGetProperty(n, out var v) && v.ValueKind == JsonValueKind.String
                ? v.GetString()! : throw new InvalidDataException($"{path}:{i + 1}: field \"{n}\" is missing or not a string (expected {FieldsOf(mine)})");
            result.Add(mine switch
            {
                FinetuneDataFormat.Conversation => new DataLine(i + 1, Messages: Conversation(root.GetRawText(), $"{path}:{i + 1}")),
                FinetuneDataFormat.Text => new DataLine(i + 1, Text: String("text")),
                _ => new DataLine(i + 1, String("prompt"), String("completion")),
            });
        }
        return new TrainingDataFile(path, format ?? FinetuneDataFormat.PromptCompletion, $"{System.IO.Path.GetExtension(path)}, {FieldsOf(format ?? FinetuneDataFormat.PromptCompletion)}", result);
    }

    static string FieldsOf(FinetuneDataFormat f) => f switch
    {
        FinetuneDataFormat.Conversation => "field \"messages\"",
        FinetuneDataFormat.Text => "field \"text\"",
        _ => PromptCompletionFile.Fields,
    };

    /// <summary>The format of one JSONL object by its fields; more than one format's fields, or none, is an error naming them.</summary>
    static FinetuneDataFormat LineFormat(JsonElement o, string path, int line)
    {
        bool Has(string n) => o.TryGetProperty(n, out _);
        var found = new List<FinetuneDataFormat>();
        if (Has("messages")) found.Add(FinetuneDataFormat.Conversation);
        if (Has("text")) found.Add(FinetuneDataFormat.Text);
        if (Has("prompt") || Has("completion")) found.Add(FinetuneDataFormat.PromptCompletion);
        if (found.Count == 1) return found[0];
        string fields = string.Join(", ", o.EnumerateObject().Select(p => $"\"{p.Name}\""));
        if (found.Count == 0)
            throw new InvalidDataException($"{path}:{line}: expected \"messages\" (a conversation), \"text\" (plain text) or {PromptCompletionFile.Fields}; " +
                                           $"the object has {(fields.Length == 0 ? "no fields" : fields)}");
        throw new InvalidDataException($"{path}:{line}: the object has fields of more than one data format ({fields}); use \"messages\", \"text\" or " +
                                       "\"prompt\" + \"completion\", one format per file");
    }

    static IReadOnlyList<ChatMessage> Conversation(string json, string where)
    {
        try { return ChatConversation.Parse(json, where); }
        catch (FormatException e) { throw new InvalidDataException(e.Message, e); }
    }

    static TrainingDataFile Csv(string path)
    {
        var lines = File.ReadAllLines(path);
        if (lines.Length == 0) throw new InvalidDataException($"{path}:1: empty file; expected a header row (prompt,completion or text or messages)");
        var header = PromptCompletionFile.SplitCsv(lines[0], path, 1).Select(h => h.Trim().ToLowerInvariant()).ToList();
        bool pc = header.Contains("prompt") || header.Contains("completion"), text = header.Contains("text"), messages = header.Contains("messages");
        if ((pc ? 1 : 0) + (text ? 1 : 0) + (messages ? 1 : 0) != 1)
            throw new InvalidDataException($"{path}:1: the header must name the columns of one data format: prompt,completion or text or messages " +
                                           $"(found {string.Join(",", header)})");
        if (pc)
            return new TrainingDataFile(path, FinetuneDataFormat.PromptCompletion, ".csv, columns prompt,completion",
                PromptCompletionFile.LoadLines(path).Select(l => new DataLine(l.Line, l.Pair.Prompt, l.Pair.Completion)).ToList());
        int col = header.IndexOf(text ? "text" : "messages");
        var result = new List<DataLine>();
        for (int i = 1; i < lines.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            var cells = PromptCompletionFile.SplitCsv(lines[i], path, i + 1);
            if (cells.Count != header.Count) throw new InvalidDataException($"{path}:{i + 1}: expected {header.Count} columns, found {cells.Count}");
            result.Add(text ? new DataLine(i + 1, Text: cells[col]) : new DataLine(i + 1, Messages: Conversation(cells[col], $"{path}:{i + 1}")));
        }
        return new TrainingDataFile(path, text ? FinetuneDataFormat.Text : FinetuneDataFormat.Conversation, $".csv, column {header[col]}", result);
    }

    static TrainingDataFile Paragraphs(string path)
    {
        var lines = File.ReadAllLines(path);
        var result = new List<DataLine>();
        int start = -1;
        var block = new List<string>();
        void Flush()
        {
            if (block.Count > 0) result.Add(new DataLine(start + 1, Text: string.Join("\n", block)));
            block.Clear();
        }
        for (int i = 0; i < lines.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) { Flush(); continue; }
            if (block.Count == 0) start = i;
            block.Add(lines[i]);
        }
        Flush();
        return new TrainingDataFile(path, FinetuneDataFormat.Text, ".txt, one text per paragraph", result);
    }
}
