using Microsoft.ML;
using Microsoft.ML.Data;
using ML.Finetune.Estimators;

namespace ML.Finetune.Data;

/// <summary>The column names of the data formats (from the estimator options or a fitted model's settings).</summary>
public sealed record DataColumnNames(string Prompt, string Completion, string Messages, string Text)
{
    public static DataColumnNames Of(FinetuneOptions o) => new(o.PromptColumnName, o.CompletionColumnName, o.MessagesColumnName, o.TextColumnName);
}

/// <summary>A data format and the columns it reads from a schema (for prompt/completion scoring the completion may be absent).</summary>
public sealed record DataColumns(FinetuneDataFormat Format, DataColumnNames Names, bool HasCompletion = true)
{
    /// <summary>The input columns this format reads, in order.</summary>
    public IReadOnlyList<string> Inputs => Format switch
    {
        FinetuneDataFormat.PromptCompletion => HasCompletion ? [Names.Prompt, Names.Completion] : [Names.Prompt],
        FinetuneDataFormat.Conversation => [Names.Messages],
        _ => [Names.Text],
    };

    public string Describe() => Format switch
    {
        FinetuneDataFormat.PromptCompletion => $"prompt/completion (columns '{Names.Prompt}', '{Names.Completion}')",
        FinetuneDataFormat.Conversation => $"conversations (column '{Names.Messages}')",
        _ => $"plain text (column '{Names.Text}')",
    };
}

/// <summary>
/// Picks the data format from the columns present (or checks the one asked for), the same way for an IDataView schema
/// (Fit, Transform) and a SchemaShape (GetOutputSchema). Errors name the columns expected and present.
/// </summary>
public static class DataFormatColumns
{
    enum Kind { Missing, Text, TextVector, Other }

    /// <summary>The format of <paramref name="schema"/>'s rows for training (every column of the format must be present).</summary>
    public static DataColumns ForTraining(DataViewSchema schema, DataColumnNames names, FinetuneDataFormat requested, string what) =>
        Resolve(n => Describe(schema.GetColumnOrNull(n)?.Type), schema.Select(c => c.Name), names, requested, what, scoring: false, preferred: null);

    public static DataColumns ForTraining(SchemaShape schema, DataColumnNames names, FinetuneDataFormat requested, string what) =>
        Resolve(n => Describe(schema, n), schema.Select(c => c.Name), names, requested, what, scoring: false, preferred: null);

    /// <summary>
    /// The format of rows to generate for (and score when they hold the target): a prompt column (with the completion if
    /// present), a messages column or a text column. When several are present the model's training format wins.
    /// </summary>
    public static DataColumns ForScoring(DataViewSchema schema, DataColumnNames names, FinetuneDataFormat trained) =>
        Resolve(n => Describe(schema.GetColumnOrNull(n)?.Type), schema.Select(c => c.Name), names, FinetuneDataFormat.Auto, "input data", scoring: true, preferred: trained);

    static (Kind Kind, string Type) Describe(DataViewType? type) => type switch
    {
        null => (Kind.Missing, ""),
        TextDataViewType => (Kind.Text, "Text"),
        VectorDataViewType { ItemType: TextDataViewType } => (Kind.TextVector, "vector of Text"),
        _ => (Kind.Other, type.ToString()!),
    };

    static (Kind Kind, string Type) Describe(SchemaShape schema, string name)
    {
        if (!schema.TryFindColumn(name, out var c)) return (Kind.Missing, "");
        bool scalar = c.Kind == SchemaShape.Column.VectorKind.Scalar;
        if (c.ItemType is TextDataViewType) return scalar ? (Kind.Text, "Text") : (Kind.TextVector, "vector of Text");
        return (Kind.Other, c.ItemType + (scalar ? "" : " vector"));
    }

    static DataColumns Resolve(Func<string, (Kind Kind, string Type)> kind, IEnumerable<string> present, DataColumnNames names,
        FinetuneDataFormat requested, string what, bool scoring, FinetuneDataFormat? preferred)
    {
        string columns = $"Columns present: {string.Join(", ", present)}.";
        void RequireText(string name, string role, bool vectorAllowed = false)
        {
            var (k, type) = kind(name);
            if (k == Kind.Missing)
                throw new ArgumentOutOfRangeException(name, $"The {role} column '{name}' was not found in the {what}; expected a column of type Text (string){(vectorAllowed ? " or a vector of Text" : "")}. {columns}");
            if (k == Kind.Text || (vectorAllowed && k == Kind.TextVector)) return;
            throw new ArgumentException($"The {role} column '{name}' of the {what} has type {type}; expected Text (string){(vectorAllowed ? " or a vector of Text" : "")}.", name);
        }
        DataColumns Checked(FinetuneDataFormat f)
        {
            switch (f)
            {
                case FinetuneDataFormat.PromptCompletion:
                    RequireText(names.Prompt, "prompt");
                    bool completion = kind(names.Completion).Kind != Kind.Missing;
                    if (!scoring || completion) RequireText(names.Completion, "completion");
                    return new DataColumns(f, names, completion);
                case FinetuneDataFormat.Conversation:
                    RequireText(names.Messages, "messages", vectorAllowed: true);
                    return new DataColumns(f, names);
                case FinetuneDataFormat.Text:
                    RequireText(names.Text, "text");
                    return new DataColumns(f, names);
                default: throw new ArgumentOutOfRangeException(nameof(requested), f, "unknown data format");
            }
        }
        if (requested != FinetuneDataFormat.Auto) return Checked(requested);

        bool Has(string n) => kind(n).Kind != Kind.Missing;
        var found = new List<(FinetuneDataFormat Format, string Columns)>();
        if (Has(names.Prompt) && (scoring || Has(names.Completion))) found.Add((FinetuneDataFormat.PromptCompletion, $"'{names.Prompt}' + '{names.Completion}'"));
        if (Has(names.Messages)) found.Add((FinetuneDataFormat.Conversation, $"'{names.Messages}'"));
        if (Has(names.Text)) found.Add((FinetuneDataFormat.Text, $"'{names.Text}'"));
        if (found.Count == 1) return Checked(found[0].Format);
        if (found.Count > 1 && preferred is { } p && found.Any(x => x.Format == p)) return Checked(p);
        if (found.Count > 1)
            throw new ArgumentException($"The {what} has columns of more than one data format ({string.Join("; ", found.Select(x => $"{x.Format}: {x.Columns}"))}); " +
                                        "set the options' DataFormat to say which to train on, or rename the other columns.");
        if (!scoring && Has(names.Prompt))
            throw new ArgumentOutOfRangeException(names.Completion, $"The {what} has a prompt column '{names.Prompt}' but no completion column '{names.Completion}'; " +
                                                  $"prompt/completion data needs both (Text). {columns}");
        if (!scoring && Has(names.Completion))
            throw new ArgumentOutOfRangeException(names.Prompt, $"The {what} has a completion column '{names.Completion}' but no prompt column '{names.Prompt}'; " +
                                                  $"prompt/completion data needs both (Text). {columns}");
        throw new ArgumentOutOfRangeException(names.Prompt, $"The {what} has none of the data formats' columns: '{names.Prompt}' and '{names.Completion}' " +
            $"(prompt/completion), '{names.Messages}' (conversations) or '{names.Text}' (plain text); all are Text (string) columns, the " +
            $"messages also a vector of Text. {columns}");
    }
}
