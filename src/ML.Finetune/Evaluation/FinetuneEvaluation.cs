using Microsoft.ML;
using Microsoft.ML.Data;

namespace ML.Finetune.Evaluation;

/// <summary>
/// MeanNll: token-weighted mean negative log-likelihood of completion + eos (from Score and ScorePerToken);
/// Perplexity = exp(MeanNll); ExactMatchAccuracy: share of rows whose generated text equals the completion after trimming whitespace.
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

    /// <summary>Metrics of data transformed by a FinetuneTransformer (which added the generated and score columns).</summary>
    public FinetuneMetrics Evaluate(IDataView transformed, string completionColumnName = "Completion", string generatedColumnName = "GeneratedText",
        string scoreColumnName = "Score", string scorePerTokenColumnName = "ScorePerToken")
    {
        ArgumentNullException.ThrowIfNull(transformed);
        DataViewSchema.Column Col(string n) => transformed.Schema.GetColumnOrNull(n)
            ?? throw new ArgumentOutOfRangeException(n, $"Column '{n}' was not found; Evaluate expects data transformed by a finetuned model.");
        var cc = Col(completionColumnName); var gc = Col(generatedColumnName); var sc = Col(scoreColumnName); var pc = Col(scorePerTokenColumnName);
        using var cursor = transformed.GetRowCursor(new[] { cc, gc, sc, pc });
        var gComp = cursor.GetGetter<ReadOnlyMemory<char>>(cc); var gGen = cursor.GetGetter<ReadOnlyMemory<char>>(gc);
        var gScore = cursor.GetGetter<float>(sc); var gPer = cursor.GetGetter<float>(pc);
        ReadOnlyMemory<char> comp = default, gen = default; float score = 0, per = 0;
        double nll = 0, tokens = 0; long rows = 0, exact = 0;
        while (cursor.MoveNext())
        {
            gComp(ref comp); gGen(ref gen); gScore(ref score); gPer(ref per);
            rows++;
            if (FinetuneMetrics.IsExactMatch(comp.ToString(), gen.ToString())) exact++;
            double n = per != 0 ? Math.Max(1, Math.Round(score / per)) : 1; // tokens scored in this row
            nll -= score; tokens += n;
        }
        if (rows == 0) throw new InvalidOperationException("Evaluate: the data has no rows.");
        double mean = nll / tokens;
        return new FinetuneMetrics(mean, Math.Exp(mean), (double)exact / rows, rows);
    }
}
