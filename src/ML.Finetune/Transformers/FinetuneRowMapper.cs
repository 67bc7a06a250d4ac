using Microsoft.ML;
using Microsoft.ML.Data;
using ML.Finetune.Data;

namespace ML.Finetune.Transformers;

/// <summary>
/// One row at a time for <see cref="FinetuneTransformer"/>: what <c>mlContext.Model.CreatePredictionEngine</c> (and
/// ASP.NET's PredictionEnginePool) use. The output row has the input's columns plus GeneratedText, and Score /
/// ScorePerToken for rows that carry a target (a completion column, messages, text). Each is computed on first read for
/// the input row's current position, through the same generation and scoring that Transform's batches use, as a
/// batch of one. Every input format works: a prompt, a messages column (JSON text or a vector of Text), a text.
/// </summary>
internal sealed class FinetuneRowMapper : IRowToRowMapper
{
    private readonly FinetuneTransformer _parent;
    private readonly DataColumns _columns;
    private readonly bool _score;

    public FinetuneRowMapper(FinetuneTransformer parent, DataViewSchema inputSchema, DataColumns columns)
    {
        _parent = parent;
        InputSchema = inputSchema;
        _columns = columns;
        OutputSchema = parent.GetOutputSchema(inputSchema);
        _score = FinetuneTransformer.Scores(columns);
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
            foreach (var name in _columns.Inputs) needed.Add(InputSchema[name].Index);
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
        private readonly Func<long, FinetuneRow>? _read;
        private long _textAt = -1, _scoreAt = -1, _rowAt = -1;
        private string _text = "";
        private (double Score, double ScorePerToken) _scores;
        private FinetuneRow? _row;

        public Row(FinetuneRowMapper mapper, DataViewRow input, HashSet<int> active)
        {
            _mapper = mapper; _input = input; _active = active;
            _read = active.Any(mapper.IsAdded) ? FinetuneRows.Reader(input, mapper._columns) : null;
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

        /// <summary>The input row's values, read once per position (a PredictionEngine's input row has position −1 or its own counter).</summary>
        FinetuneRow Current()
        {
            if (_row is null || _rowAt != _input.Position)
            {
                _row = _read!(-1);
                _rowAt = _input.Position;
            }
            return _row;
        }

        string GeneratedText()
        {
            if (_textAt != _input.Position)
            {
                _mapper._parent.CheckAlive();
                _text = _mapper._parent.GenerateRows([Current()])[0];
                _textAt = _input.Position;
            }
            return _text;
        }

        (double Score, double ScorePerToken) Scores()
        {
            if (_scoreAt != _input.Position)
            {
                _mapper._parent.CheckAlive();
                _scores = _mapper._parent.ScoreRows([Current()])[0];
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
