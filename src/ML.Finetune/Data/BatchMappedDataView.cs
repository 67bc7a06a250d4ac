using Microsoft.ML;
using Microsoft.ML.Data;

namespace ML.Finetune.Data;

/// <summary>
/// Computes new columns for a batch of rows at a time (one forward pass per batch, not per row), lazily,
/// as rows are cursored. It is the IDataView behind our transformers' Transform.
/// </summary>
public interface IBatchColumnMapper
{
    /// <summary>Source column names the mapper reads, in the order MapBatch receives their values.</summary>
    IReadOnlyList<string> InputColumns { get; }
    /// <summary>Columns added to the output schema.</summary>
    IReadOnlyList<(string Name, DataViewType Type)> OutputColumns { get; }
    int BatchSize { get; }
    /// <summary>inputs[row][inputIndex] → outputs[row][outputIndex]. Values: string, float, double, int, long, bool, float[].</summary>
    object[][] MapBatch(IReadOnlyList<object[]> inputs);
}

/// <summary>
/// Two source cursors walk in step: a look-ahead one reads the mapper's inputs a batch ahead, the main one serves
/// the pass-through columns row by row. IDataViews are re-cursorable with a stable order, so this needs no row cache.
/// </summary>
public sealed class BatchMappedDataView : IDataView
{
    private readonly IDataView _source;
    private readonly IBatchColumnMapper _mapper;
    private readonly int[] _inputIndices;

    public BatchMappedDataView(IDataView source, IBatchColumnMapper mapper, Action? checkAlive = null)
    {
        _source = source;
        _mapper = mapper;
        CheckAlive = checkAlive ?? (() => { });
        _inputIndices = mapper.InputColumns.Select(name =>
            source.Schema.GetColumnOrNull(name)?.Index
            ?? throw new ArgumentOutOfRangeException(nameof(source), $"Input column '{name}' was not found in the data.")).ToArray();
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(source.Schema);
        foreach (var (name, type) in mapper.OutputColumns) builder.AddColumn(name, type);
        Schema = builder.ToSchema();
    }

    internal Action CheckAlive { get; }
    public bool CanShuffle => false;
    public DataViewSchema Schema { get; }
    public long? GetRowCount() => _source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var needed = columnsNeeded.Select(c => c.Index).ToHashSet();
        int nSource = _source.Schema.Count;
        bool anyOutput = needed.Any(i => i >= nSource);
        var sourceCols = needed.Where(i => i < nSource).Select(i => _source.Schema[i]);
        var main = _source.GetRowCursor(sourceCols);
        DataViewRowCursor? ahead = anyOutput ? _source.GetRowCursor(_inputIndices.Distinct().Select(i => _source.Schema[i])) : null;
        return new Cursor(this, main, ahead, needed);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
        => new[] { GetRowCursor(columnsNeeded, rand) };

    internal static object ReadValue(DataViewRow row, DataViewSchema.Column col)
    {
        var t = col.Type;
        if (t is TextDataViewType) { var v = default(ReadOnlyMemory<char>); row.GetGetter<ReadOnlyMemory<char>>(col)(ref v); return v.ToString(); }
        if (t == NumberDataViewType.Single) { float v = 0; row.GetGetter<float>(col)(ref v); return v; }
        if (t == NumberDataViewType.Double) { double v = 0; row.GetGetter<double>(col)(ref v); return v; }
        if (t == NumberDataViewType.Int32) { int v = 0; row.GetGetter<int>(col)(ref v); return v; }
        if (t == NumberDataViewType.Int64) { long v = 0; row.GetGetter<long>(col)(ref v); return v; }
        if (t == BooleanDataViewType.Instance) { bool v = false; row.GetGetter<bool>(col)(ref v); return v; }
        if (t is VectorDataViewType { ItemType: TextDataViewType })
        {
            var v = default(VBuffer<ReadOnlyMemory<char>>); row.GetGetter<VBuffer<ReadOnlyMemory<char>>>(col)(ref v); return v.DenseValues().Select(x => x.ToString()).ToArray();
        }
        if (t is VectorDataViewType vt && vt.ItemType == NumberDataViewType.Single)
        {
            var v = default(VBuffer<float>); row.GetGetter<VBuffer<float>>(col)(ref v); return v.DenseValues().ToArray();
        }
        throw new ArgumentException($"Column '{col.Name}' has type {t}, which is not supported here (expected text, a number, a boolean, a float vector or a text vector).");
    }

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly BatchMappedDataView _parent;
        private readonly DataViewRowCursor _main;
        private readonly DataViewRowCursor? _ahead;
        private readonly HashSet<int> _active;
        private object[][] _batch = Array.Empty<object[]>();
        private int _inBatch;
        private long _position = -1;

        public Cursor(BatchMappedDataView parent, DataViewRowCursor main, DataViewRowCursor? ahead, HashSet<int> active)
        { _parent = parent; _main = main; _ahead = ahead; _active = active; }

        public override DataViewSchema Schema => _parent.Schema;
        public override long Position => _position;
        public override long Batch => 0;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _main.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);

        public override bool MoveNext()
        {
            _parent.CheckAlive();
            if (!_main.MoveNext()) return false;
            _position++;
            if (_ahead != null)
            {
                _inBatch++;
                if (_inBatch >= _batch.Length) FillBatch();
            }
            return true;
        }

        private void FillBatch()
        {
            var inputs = new List<object[]>();
            var cols = _parent._inputIndices.Select(i => _parent._source.Schema[i]).ToArray();
            while (inputs.Count < Math.Max(1, _parent._mapper.BatchSize) && _ahead!.MoveNext())
                inputs.Add(cols.Select(c => ReadValue(_ahead, c)).ToArray());
            _batch = _parent._mapper.MapBatch(inputs);
            if (_batch.Length != inputs.Count) throw new InvalidOperationException($"The mapper returned {_batch.Length} rows for a batch of {inputs.Count}.");
            _inBatch = 0;
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            int nSource = _parent._source.Schema.Count;
            if (column.Index < nSource) return _main.GetGetter<TValue>(_parent._source.Schema[column.Index]);
            int k = column.Index - nSource;
            var type = _parent._mapper.OutputColumns[k].Type;
            Delegate getter = type switch
            {
                TextDataViewType => (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) => v = ((string)Current(k)).AsMemory()),
                VectorDataViewType => (ValueGetter<VBuffer<float>>)((ref VBuffer<float> v) => v = new VBuffer<float>(((float[])Current(k)).Length, (float[])((float[])Current(k)).Clone())),
                _ when type == NumberDataViewType.Single => (ValueGetter<float>)((ref float v) => v = (float)Current(k)),
                _ when type == NumberDataViewType.Double => (ValueGetter<double>)((ref double v) => v = (double)Current(k)),
                _ when type == NumberDataViewType.Int32 => (ValueGetter<int>)((ref int v) => v = (int)Current(k)),
                _ when type == NumberDataViewType.Int64 => (ValueGetter<long>)((ref long v) => v = (long)Current(k)),
                _ when type == BooleanDataViewType.Instance => (ValueGetter<bool>)((ref bool v) => v = (bool)Current(k)),
                _ => throw new NotSupportedException($"Output column type {type} is not supported."),
            };
            return getter as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Column '{column.Name}' has type {type}; it cannot be read as {typeof(TValue).Name}.");
        }

        private object Current(int k)
        {
            if (_position < 0) throw new InvalidOperationException("The cursor is not on a row.");
            return _batch[_inBatch][k];
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) { _main.Dispose(); _ahead?.Dispose(); }
            base.Dispose(disposing);
        }
    }
}
