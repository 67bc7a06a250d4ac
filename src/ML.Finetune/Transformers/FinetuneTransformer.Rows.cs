using Microsoft.ML;
using Microsoft.ML.Data;
using ML.Finetune.Chat;
using ML.Finetune.Data;
using ML.Finetune.Estimators;
using ML.Finetune.Generation;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Transformers;

/// <summary>Generation and scoring of rows of every data format (the GeneratedText, Score and ScorePerToken columns).</summary>
public sealed partial class FinetuneTransformer
{
    /// <summary>Generates a completion for each prompt (the GeneratedText column's values).</summary>
    /// <remarks>Batch i..i+BatchSize samples with seed GenerationSeed + i, so a row's text does not depend on earlier batches.</remarks>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts)
    {
        ThrowIfDisposed();
        var ids = prompts.Select(p => Encoder.EncodePrompt(p, MaxPromptTokens)).Select(x => x.Length == 0 ? new long[] { Encoder.EosId } : x).ToList();
        return GenerateFromIds(ids, PromptStopIds()).Select(r => CutAtStop(r.Text, Settings.StopStrings)).ToList();
    }

    /// <summary>
    /// The next assistant reply of each conversation (the GeneratedText of a messages column): rendered with the chat
    /// template and the generation prompt, generated until the template's end-of-turn token or an eos
    /// (<see cref="TextGenerator.ChatStopTokenIds"/>). A final assistant message is the reference and is left out.
    /// </summary>
    public IReadOnlyList<ChatReply> GenerateReplies(IReadOnlyList<IReadOnlyList<ChatMessage>> conversations)
    {
        ThrowIfDisposed();
        var chat = Data.Conversation;
        var ids = conversations.Select((c, i) => chat.EncodeForGeneration(c, MaxPromptTokens, $"conversation {i}")).ToList();
        return GenerateFromIds(ids, ChatStopIds()).Select(r => r with { Text = CutAtStop(r.Text, Settings.StopStrings) }).ToList();
    }

    /// <summary>(Σ log p, mean log p per token) of completion + eos given the prompt, per pair.</summary>
    public IReadOnlyList<(double Score, double ScorePerToken)> Score(IReadOnlyList<(string Prompt, string Completion)> pairs) =>
        ScoreRows(pairs.Select((p, i) => FinetuneRow.PromptCompletion(i, p.Prompt, p.Completion, Settings.CompletionColumnName)).ToList());

    /// <summary>GeneratedText of rows of one format (a batch).</summary>
    internal IReadOnlyList<string> GenerateRows(IReadOnlyList<FinetuneRow> rows)
    {
        if (rows.Count == 0) return [];
        if (rows[0].Messages is not null) return GenerateReplies(rows.Select(r => r.Messages!).ToList()).Select(r => r.Text).ToList();
        return Generate(rows.Select(r => r.Prompt ?? r.Text ?? "").ToList());
    }

    /// <summary>
    /// Score and ScorePerToken of rows (see the class remarks): the target tokens of each row are the completion + eos,
    /// the final assistant message (NaN when the conversation does not end with one), or every token of a text (summed
    /// over its windows).
    /// </summary>
    internal IReadOnlyList<(double Score, double ScorePerToken)> ScoreRows(IReadOnlyList<FinetuneRow> rows)
    {
        ThrowIfDisposed();
        // Each row's examples, then one scored list in batches; a row sums the scores of its examples.
        var examples = new List<(int Row, EncodedExample Example)>();
        for (int i = 0; i < rows.Count; i++)
        {
            var r = rows[i];
            if (r.Messages is { } m)
            {
                if (m.Count > 0 && m[^1].Role == "assistant") examples.Add((i, Data.Conversation.EncodeLastReply(m, r.Where)));
            }
            else if (r.Text is { } text) examples.AddRange(Data.Text.Encode(text).Select(e => (i, e)));
            else examples.Add((i, Encoder.Encode(r.Prompt ?? "", r.Completion ?? "", r.Index, r.Column)));
        }
        var sums = new double[rows.Count];
        var counts = new int[rows.Count];
        var has = new bool[rows.Count];
        int bs = Settings.BatchSize;
        for (int i = 0; i < examples.Count; i += bs)
        {
            var chunk = examples.Skip(i).Take(bs).ToList();
            var scored = ScoreBatch(chunk.Select(c => c.Example).ToList());
            for (int j = 0; j < chunk.Count; j++)
            {
                sums[chunk[j].Row] += scored[j].Sum;
                counts[chunk[j].Row] += scored[j].Count;
                has[chunk[j].Row] = true;
            }
        }
        return Enumerable.Range(0, rows.Count)
            .Select(i => has[i] ? (sums[i], counts[i] == 0 ? 0.0 : sums[i] / counts[i]) : (double.NaN, double.NaN)).ToList();
    }

    /// <summary>Prompt tokens that leave room for the new tokens: GPT-2's learned positions end at the context.</summary>
    int MaxPromptTokens => Math.Max(1, Settings.MaxSequenceLength - (Model.Config.IsGpt2 ? Settings.MaxNewTokens : 0));

    HashSet<long> PromptStopIds() => new(Model.Config.EosTokenIds) { Encoder.EosId };

    HashSet<long> ChatStopIds() => TextGenerator.ChatStopTokenIds(Model.Config, Tokenizer, ChatTemplate!).Append(Encoder.EosId).ToHashSet();

    /// <summary>Generation in batches of BatchSize; batch i..i+BatchSize samples with seed GenerationSeed + i.</summary>
    List<ChatReply> GenerateFromIds(IReadOnlyList<long[]> prompts, HashSet<long> stops)
    {
        var g = Settings.Generation;
        var result = new List<ChatReply>();
        for (int i = 0; i < prompts.Count; i += g.BatchSize)
        {
            var generated = TextGenerator.Generate(Model, Method, prompts.Skip(i).Take(g.BatchSize).ToList(), new GenerationOptions
            {
                MaxNewTokens = g.MaxNewTokens, DoSample = g.Temperature > 0, Temperature = g.Temperature > 0 ? g.Temperature : 1.0,
                TopK = g.TopK, TopP = g.TopP, Seed = g.Seed + i, EosTokenIds = stops.ToList(), PadTokenId = Encoder.PadId,
            }).NewTokens;
            foreach (var ids in generated)
                result.Add(new ChatReply(Tokenizer.Decode(ids.Where(x => !stops.Contains(x)).Select(x => (int)x)), ids,
                    ids.Length > 0 && stops.Contains(ids[^1])));
        }
        return result;
    }

    /// <summary>
    /// Per example: (Σ log p(target), number of targets) over the labelled positions, through the method's LM head on
    /// those positions only, in chunks (the same labels and log-probs as the training objective).
    /// </summary>
    List<(double Sum, int Count)> ScoreBatch(IReadOnlyList<EncodedExample> examples)
    {
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        using var batch = FinetuneTrainer.Collate(examples, Encoder.PadId, Model.Device);
        var hidden = Method.HiddenStates(Model, batch.InputIds, batch.AttentionMask);
        var (lp, m) = FinetuneObjective.TargetLogProbs(Model, hidden, batch.Labels);
        var sums = lp.to_type(ScalarType.Float64).sum(1).cpu().data<double>().ToArray();
        var counts = m.sum(1).to_type(ScalarType.Float64).cpu().data<double>().ToArray();
        return sums.Select((s, i) => (s, (int)counts[i])).ToList();
    }

    static string CutAtStop(string text, string[] stops)
    {
        int cut = text.Length;
        foreach (var s in stops ?? Array.Empty<string>())
            if (!string.IsNullOrEmpty(s)) { int at = text.IndexOf(s, StringComparison.Ordinal); if (at >= 0 && at < cut) cut = at; }
        return text[..cut];
    }

    /// <summary>Whether rows of these columns get Score and ScorePerToken: prompts with their completion, conversations, texts.</summary>
    internal static bool Scores(DataColumns columns) => columns.Format != FinetuneDataFormat.PromptCompletion || columns.HasCompletion;

    private sealed class Mapper(FinetuneTransformer t, DataColumns columns) : IBatchColumnMapper
    {
        public IReadOnlyList<string> InputColumns => columns.Inputs;
        public IReadOnlyList<(string Name, DataViewType Type)> OutputColumns
        {
            get
            {
                var list = new List<(string, DataViewType)> { (t.Settings.OutputColumnName, TextDataViewType.Instance) };
                if (Scores(columns))
                {
                    list.Add((t.Settings.ScoreColumnName, NumberDataViewType.Single));
                    list.Add((t.Settings.ScorePerTokenColumnName, NumberDataViewType.Single));
                }
                return list;
            }
        }
        public int BatchSize => t.Settings.BatchSize;
        public object[][] MapBatch(IReadOnlyList<object[]> inputs)
        {
            var rows = inputs.Select(values => FinetuneRows.FromValues(values, columns)).ToList();
            var text = t.GenerateRows(rows);
            if (!Scores(columns)) return text.Select(s => new object[] { s }).ToArray();
            var scores = t.ScoreRows(rows);
            return text.Select((s, i) => new object[] { s, (float)scores[i].Score, (float)scores[i].ScorePerToken }).ToArray();
        }
    }

    private sealed class EmptyDataView(DataViewSchema schema) : IDataView
    {
        public bool CanShuffle => false;
        public DataViewSchema Schema { get; } = schema;
        public long? GetRowCount() => 0;
        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => throw new NotSupportedException();
        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => throw new NotSupportedException();
    }
}
