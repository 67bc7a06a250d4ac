// A small stateful transformer that proves our ML.NET persistence route (src/ML.Finetune/Persistence):
// it carries a float array and a JSON config, saves through ModelPersistence and loads by LoaderSignature
// with no registration call. The NoAccess test assembly compiles this same file (NO_ACCESS defined) together
// with its own copy of ModelPersistence but WITHOUT [IgnoresAccessChecksTo], so saving must fail there.
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using ML.Finetune.Data;
using ML.Finetune.Persistence;

#if NO_ACCESS
[assembly: LoadableClass(typeof(ML.Finetune.TestComponents.NoAccess.ScaleShiftTransformer), null, typeof(SignatureLoadModel),
    "Scale shift (no access)", ML.Finetune.TestComponents.NoAccess.ScaleShiftTransformer.LoaderSignature)]
namespace ML.Finetune.TestComponents.NoAccess
#else
[assembly: LoadableClass(typeof(ML.Finetune.TestComponents.ScaleShiftTransformer), null, typeof(SignatureLoadModel),
    "Scale shift", ML.Finetune.TestComponents.ScaleShiftTransformer.LoaderSignature)]
namespace ML.Finetune.TestComponents
#endif
{
    public sealed record ScaleShiftConfig(string InputColumn, string OutputColumn, float Shift);

    public sealed class ScaleShiftTransformer : ITransformer
    {
#if NO_ACCESS
        public const string LoaderSignature = "MLFtScaleShiftNoAccess";
#else
        public const string LoaderSignature = "MLFtScaleShift";
#endif
        private static readonly PersistedComponentInfo Info = new("SCALSHFT", 0x00010001, LoaderSignature, typeof(ScaleShiftTransformer));

        public float[] Weights { get; }
        public ScaleShiftConfig Config { get; }

        public ScaleShiftTransformer(float[] weights, ScaleShiftConfig config) { Weights = weights; Config = config; }

        public bool IsRowToRowMapper => false;
        public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => throw new NotSupportedException("Use Transform.");

        public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Transform(new EmptyDataView(inputSchema)).Schema;

        public IDataView Transform(IDataView input) => new BatchMappedDataView(input, new Mapper(this));

        void ICanSaveModel.Save(ModelSaveContext ctx) => ModelPersistence.Save(ctx, Info, w =>
        {
            w.Header.Write(Weights.Length);
            w.WriteEntry("weights.bin", s => { foreach (var x in Weights) s.Write(BitConverter.GetBytes(x)); });
            w.WriteEntry("config.json", JsonSerializer.SerializeToUtf8Bytes(Config));
        });

        private static ScaleShiftTransformer Create(IHostEnvironment env, ModelLoadContext ctx) => ModelPersistence.Load(ctx, Info, r =>
        {
            int n = r.Header.ReadInt32();
            byte[] raw = r.ReadEntry("weights.bin");
            if (raw.Length != n * 4) throw new InvalidDataException($"weights.bin holds {raw.Length} bytes; expected {n * 4}.");
            var weights = new float[n];
            Buffer.BlockCopy(raw, 0, weights, 0, raw.Length);
            var config = JsonSerializer.Deserialize<ScaleShiftConfig>(r.ReadEntry("config.json"))
                ?? throw new InvalidDataException("config.json is empty.");
            return new ScaleShiftTransformer(weights, config);
        });

        private sealed class Mapper : IBatchColumnMapper
        {
            private readonly ScaleShiftTransformer _t;
            public Mapper(ScaleShiftTransformer t) => _t = t;
            public IReadOnlyList<string> InputColumns => new[] { _t.Config.InputColumn };
            public IReadOnlyList<(string Name, DataViewType Type)> OutputColumns =>
                new[] { (_t.Config.OutputColumn, (DataViewType)new VectorDataViewType(NumberDataViewType.Single, _t.Weights.Length)) };
            public int BatchSize => 3;
            public object[][] MapBatch(IReadOnlyList<object[]> inputs) => inputs.Select(row =>
            {
                var x = (float[])row[0];
                if (x.Length != _t.Weights.Length) throw new ArgumentException($"Column '{_t.Config.InputColumn}' has {x.Length} values; expected {_t.Weights.Length}.");
                return new object[] { x.Select((v, i) => v * _t.Weights[i] + _t.Config.Shift).ToArray() };
            }).ToArray();
        }

        /// <summary>A zero-row view with a given schema, to derive an output schema without data.</summary>
        private sealed class EmptyDataView : IDataView
        {
            public EmptyDataView(DataViewSchema schema) => Schema = schema;
            public bool CanShuffle => false;
            public DataViewSchema Schema { get; }
            public long? GetRowCount() => 0;
            public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => throw new NotSupportedException();
            public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => throw new NotSupportedException();
        }
    }
}
