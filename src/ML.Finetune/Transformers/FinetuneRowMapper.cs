using Microsoft.ML;
using Microsoft.ML.Data;

namespace ML.Finetune.Transformers;

/// <summary>
/// One row at a time for <see cref="FinetuneTransformer"/>: what <c>mlContext.Model.CreatePredictionEngine</c> (and
/// ASP.NET's PredictionEnginePool) use. The output row has the input's columns plus GeneratedText, and Score /
/// ScorePerToken when the input has the completion column. Each is computed on first read for the input row's current
/// position, through the same <see cref="FinetuneTransformer.Generate"/> and <see cref="FinetuneTransformer.Score"/>
/// that Transform's batches use, as a batch of one.
/// </summary>
internal sealed class FinetuneRowMapper : IRowToRowMapper
{
    private readonly FinetuneTransformer _parent;
    private readonly bool _score;

    public FinetuneRowMapper(FinetuneTransformer parent, DataViewSchema inputSchema)
    {
        _parent = parent;
        InputSchema = inputSchema;
        OutputSchema = parent.GetOutputSchema(inputSchema);
        _score = parent.ScoresCompletions(inputSchema);
    }

    public DataViewSchema InputSchema { get; }
    public DataViewSchema OutputSchema { get; }

    private FinetuneTransformerSettings Settings => _parent.Settings;
    private bool IsAdded(int outputIndex) => outputIndex >= InputSchema.Count;

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var needed = new HashSet<int>();
        foreach (var c in dependingColumns)
        {
            if (!IsAdded(c.Index)) { needed.Add(c.Index); continue; }
            needed.Add(InputSchema[Settings.PromptColumnName].Index);
            if (_score) needed.Add(InputSchema[Settings.CompletionColumnName].Index);
        }
        return needed.OrderBy(i => i).Select(i => InputSchema[i]).ToArray();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.Schema != InputSchema)
            throw new ArgumentException("The input row's schema is not the schema this mapper was created for.", nameof(input));
        return new Row(this, input, activeColumns.Select(c => c.Index).ToHashSet());
    }

    private sealed class Row : DataViewRow
    {
        private readonly FinetuneRowMapper _mapper;
        private readonly DataViewRow _input;
        private readonly HashSet<int> _active;
        private readonly ValueGetter<ReadOnlyMemory<char>> _prompt;
        private readonly ValueGetter<ReadOnlyMemory<char>>? _completion;
        private long _textAt = -1, _scoreAt = -1;
        private string _text = "";
        private (double Score, double ScorePerToken) _scores;

        public Row(FinetuneRowMapper mapper, DataViewRow input, HashSet<int> active)
        {
            _mapper = mapper; _input = input; _active = active;
            var s = mapper.Settings;
            bool anyAdded = active.Any(mapper.IsAdded);
            _prompt = anyAdded ? input.GetGetter<ReadOnlyMemory<char>>(input.Schema[s.PromptColumnName]) : (ref ReadOnlyMemory<char> v) => v = default;
            _completion = anyAdded && mapper._score ? input.GetGetter<ReadOnlyMemory<char>>(input.Schema[s.CompletionColumnName]) : null;
        }

        public override DataViewSchema Schema => _mapper.OutputSchema;
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) =>
            _mapper.IsAdded(column.Index) ? _active.Contains(column.Index) : _input.IsColumnActive(_input.Schema[column.Index]);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_mapper.IsAdded(column.Index)) return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            if (!_active.Contains(column.Index)) throw new InvalidOperationException($"Column '{column.Name}' is not active in this row.");
            int k = column.Index - _mapper.InputSchema.Count; // 0 text, 1 score, 2 score per token
            Delegate getter = k == 0
                ? (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) => v = GeneratedText().AsMemory())
                : (ValueGetter<float>)((ref float v) => v = (float)(k == 1 ? Scores().Score : Scores().ScorePerToken));
            return getter as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Column '{column.Name}' has type {column.Type}; it cannot be read as {typeof(TValue).Name}.");
        }

        string Read(ValueGetter<ReadOnlyMemory<char>> getter)
        {
            ReadOnlyMemory<char> v = default;
            getter(ref v);
            return v.ToString();
        }

        string GeneratedText()
        {
            if (_textAt != _input.Position)
            {
                _mapper._parent.CheckAlive();
                _text = _mapper._parent.Generate(new[] { Read(_prompt) })[0];
                _textAt = _input.Position;
            }
            return _text;
        }

        (double Score, double ScorePerToken) Scores()
        {
            if (_scoreAt != _input.Position)
            {
                _mapper._parent.CheckAlive();
                _scores = _mapper._parent.Score(new[] { (Read(_prompt), Read(_completion!)) })[0];
                _scoreAt = _input.Position;
            }
            return _scores;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _input.Dispose();
            base.Dispose(disposing);
        }
    }
}
