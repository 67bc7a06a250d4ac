using Microsoft.ML;
using Microsoft.ML.Data;

namespace ML.Finetune.Evaluation;

/// <summary>
/// MeanNll: token-weighted mean negative log-likelihood of the scored tokens (completion + eos; a conversation's final
/// assistant message; a text's tokens), from Score and ScorePerToken; Perplexity = exp(MeanNll); ExactMatchAccuracy:
/// share of rows whose generated text equals the expected text (the completion, or the content of a conversation's
/// final assistant message) after trimming whitespace; NaN for plain text, which has no expected reply.
/// </summary>
public sealed record FinetuneMetrics(double MeanNll, double Perplexity, double ExactMatchAccuracy, long RowCount)
{
    /// <summary>The exact-match rule of <see cref="ExactMatchAccuracy"/>: equal after trimming whitespace at both ends.</summary>
    public static bool IsExactMatch(string expected, string generated) => expected.Trim() == generated.Trim();
}

public sealed class FinetuneOperations
{
    private readonly MLContext _ml;
    internal FinetuneOperations(MLContext ml) => _ml = ml;

    /// <summary>
    /// Metrics of data transformed by a FinetuneTransformer (which added the generated and score columns). The expected
    /// text is the completion column; without one, the last message of the messages column (which must be the
    /// assistant's); without either, plain text (no exact match). Rows with a NaN score (nothing to score) are left out
    /// of the likelihood.
    /// </summary>
    public FinetuneMetrics Evaluate(IDataView transformed, string completionColumnName = "Completion", string generatedColumnName = "GeneratedText",
        string scoreColumnName = "Score", string scorePerTokenColumnName = "ScorePerToken", string messagesColumnName = "Messages")
    {
        ArgumentNullException.ThrowIfNull(transformed);
        DataViewSchema.Column Col(string n) => transformed.Schema.GetColumnOrNull(n)
            ?? throw new ArgumentOutOfRangeException(n, $"Column '{n}' was not found; Evaluate expects data transformed by a finetuned model.");
        var gc = Col(generatedColumnName); var sc = Col(scoreColumnName); var pc = Col(scorePerTokenColumnName);
        var expectedColumn = transformed.Schema.GetColumnOrNull(completionColumnName) ?? transformed.Schema.GetColumnOrNull(messagesColumnName);
        bool messages = expectedColumn?.Name == messagesColumnName && transformed.Schema.GetColumnOrNull(completionColumnName) is null;
        var columns = new List<DataViewSchema.Column> { gc, sc, pc };
        if (expectedColumn is { } ec) columns.Add(ec);
        using var cursor = transformed.GetRowCursor(columns);
        var gGen = cursor.GetGetter<ReadOnlyMemory<char>>(gc);
        var gScore = cursor.GetGetter<float>(sc); var gPer = cursor.GetGetter<float>(pc);
        Func<long, string>? expected = expectedColumn is { } col ? ExpectedGetter(cursor, col, messages) : null;
        ReadOnlyMemory<char> gen = default; float score = 0, per = 0;
        double nll = 0, tokens = 0; long rows = 0, exact = 0;
        while (cursor.MoveNext())
        {
            gGen(ref gen); gScore(ref score); gPer(ref per);
            if (expected is not null && FinetuneMetrics.IsExactMatch(expected(rows), gen.ToString())) exact++;
            rows++;
            if (float.IsNaN(score)) continue;
            double n = per != 0 ? Math.Max(1, Math.Round(score / per)) : 1; // tokens scored in this row
            nll -= score; tokens += n;
        }
        if (rows == 0) throw new InvalidOperationException("Evaluate: the data has no rows.");
        double mean = tokens == 0 ? double.NaN : nll / tokens;
        return new FinetuneMetrics(mean, Math.Exp(mean), expected is null ? double.NaN : (double)exact / rows, rows);
    }

    /// <summary>The expected text of the current row: the completion, or the content of the conversation's last (assistant) message.</summary>
    static Func<long, string> ExpectedGetter(DataViewRowCursor cursor, DataViewSchema.Column column, bool messages)
    {
        if (!messages)
        {
            var g = cursor.GetGetter<ReadOnlyMemory<char>>(column);
            return _ => { ReadOnlyMemory<char> v = default; g(ref v); return v.ToString(); };
        }
        var read = Data.FinetuneRows.Reader(cursor, new Data.DataColumns(Estimators.FinetuneDataFormat.Conversation,
            new Data.DataColumnNames("", "", column.Name, "")));
        return row =>
        {
            var m = read(row).Messages!;
            if (m[^1].Role != "assistant")
                throw new ArgumentException($"Evaluate: {Data.FinetuneRows.Where(row, column.Name)}: the conversation does not end with an " +
                                            "assistant message, so there is no expected reply to compare with.");
            return m[^1].Content ?? "";
        };
    }
}
