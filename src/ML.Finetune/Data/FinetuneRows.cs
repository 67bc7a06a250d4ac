using Microsoft.ML;
using Microsoft.ML.Data;
using ML.Finetune.Chat;
using ML.Finetune.Estimators;

namespace ML.Finetune.Data;

/// <summary>
/// One row of finetuning data: a prompt (and maybe its completion), a conversation, or a text, with its 0-based row
/// index and the column errors about it name (the completion, messages or text column).
/// </summary>
public sealed record FinetuneRow(long Index, string Column)
{
    /// <summary>"row 3 (counting from 1), column 'Messages'".</summary>
    public string Where => FinetuneRows.Where(Index, Column);
    public string? Prompt { get; init; }
    public string? Completion { get; init; }
    public IReadOnlyList<ChatMessage>? Messages { get; init; }
    public string? Text { get; init; }

    public static FinetuneRow PromptCompletion(long index, string prompt, string? completion, string completionColumn = "Completion") =>
        new(index, completionColumn) { Prompt = prompt, Completion = completion };
    public static FinetuneRow Conversation(long index, IReadOnlyList<ChatMessage> messages, string column = "Messages") => new(index, column) { Messages = messages };
    public static FinetuneRow PlainText(long index, string text, string column = "Text") => new(index, column) { Text = text };
}

/// <summary>Reads the rows of a <see cref="DataColumns"/> format from an IDataView, one cursor pass.</summary>
public static class FinetuneRows
{
    /// <summary>"row 3 (counting from 1), column 'Messages'": where a value came from.</summary>
    public static string Where(long index, string column) => index < 0 ? $"column '{column}'" : $"row {index + 1} (counting from 1), column '{column}'";

    /// <summary>The rows of <paramref name="data"/>; <paramref name="checkAlive"/> runs before each (cancellation).</summary>
    public static IEnumerable<FinetuneRow> Read(IDataView data, DataColumns columns, Action? checkAlive = null)
    {
        var cols = columns.Inputs.Select(n => data.Schema[n]).ToArray();
        using var cursor = data.GetRowCursor(cols);
        var read = Reader(cursor, columns);
        for (long row = 0; cursor.MoveNext(); row++)
        {
            checkAlive?.Invoke();
            yield return read(row);
        }
    }

    /// <summary>A function that reads the current row of <paramref name="row"/> (a cursor or a PredictionEngine's input row).</summary>
    public static Func<long, FinetuneRow> Reader(DataViewRow row, DataColumns columns)
    {
        var n = columns.Names;
        switch (columns.Format)
        {
            case FinetuneDataFormat.PromptCompletion:
                var prompt = TextGetter(row, n.Prompt);
                var completion = columns.HasCompletion ? TextGetter(row, n.Completion) : null;
                return i => FinetuneRow.PromptCompletion(i, prompt(), completion?.Invoke(), n.Completion);
            case FinetuneDataFormat.Conversation:
                var messages = MessagesGetter(row, n.Messages);
                return i => FinetuneRow.Conversation(i, messages(Where(i, n.Messages)), n.Messages);
            default:
                var text = TextGetter(row, n.Text);
                return i => FinetuneRow.PlainText(i, text(), n.Text);
        }
    }

    /// <summary>A row from the values a batch mapper reads (<see cref="DataColumns.Inputs"/> in order: strings, a string[] for a Text vector).</summary>
    public static FinetuneRow FromValues(object[] values, DataColumns columns, long index = -1)
    {
        var n = columns.Names;
        string Text(int k) => values[k]?.ToString() ?? "";
        switch (columns.Format)
        {
            case FinetuneDataFormat.PromptCompletion:
                return FinetuneRow.PromptCompletion(index, Text(0), columns.HasCompletion ? Text(1) : null, n.Completion);
            case FinetuneDataFormat.Conversation:
                string where = Where(index, n.Messages);
                var messages = values[0] is string[] items ? FromRoleContentPairs(items, where) : ChatConversation.Parse(Text(0), where);
                return FinetuneRow.Conversation(index, messages, n.Messages);
            default:
                return FinetuneRow.PlainText(index, Text(0), n.Text);
        }
    }

    static Func<string> TextGetter(DataViewRow row, string name)
    {
        var g = row.GetGetter<ReadOnlyMemory<char>>(row.Schema[name]);
        return () =>
        {
            ReadOnlyMemory<char> v = default;
            g(ref v);
            return v.ToString();
        };
    }

    /// <summary>A conversation from JSON text, or from a vector of Text alternating role and content.</summary>
    static Func<string, IReadOnlyList<ChatMessage>> MessagesGetter(DataViewRow row, string name)
    {
        var col = row.Schema[name];
        if (col.Type is TextDataViewType)
        {
            var text = TextGetter(row, name);
            return where => ChatConversation.Parse(text(), where);
        }
        var g = row.GetGetter<VBuffer<ReadOnlyMemory<char>>>(col);
        return where =>
        {
            VBuffer<ReadOnlyMemory<char>> v = default;
            g(ref v);
            return FromRoleContentPairs(v.DenseValues().Select(x => x.ToString()).ToList(), where);
        };
    }

    /// <summary>
    /// A conversation written as a flat list alternating role and content: <c>["system", "Be brief.", "user", "Hi",
    /// "assistant", "Hello"]</c> (the typed ML.NET form of a messages column: a vector of Text).
    /// </summary>
    public static IReadOnlyList<ChatMessage> FromRoleContentPairs(IReadOnlyList<string> items, string where)
    {
        if (items.Count == 0) throw new FormatException($"{where}: the conversation has no messages.");
        if (items.Count % 2 != 0)
            throw new FormatException($"{where}: a vector of Text holds a conversation as role, content, role, content, ...; it has {items.Count} items, an odd number.");
        var list = new List<ChatMessage>(items.Count / 2);
        for (int i = 0; i < items.Count; i += 2)
        {
            if (string.IsNullOrEmpty(items[i]))
                throw new FormatException($"{where}: item {i} (0-based) must be a role (\"system\", \"user\", \"assistant\", ...), got an empty string.");
            list.Add(new ChatMessage(items[i], items[i + 1]));
        }
        return list;
    }
}
