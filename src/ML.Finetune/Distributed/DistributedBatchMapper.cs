using Microsoft.ML.Data;
using ML.Finetune.Data;

namespace ML.Finetune.Distributed;

/// <summary>
/// Distributed scoring: wraps a batch mapper so that N ranks compute a Transform's new columns together. The data view
/// reads N × BatchSize rows ahead; rank r maps the r-th BatchSize of them (exactly a batch one process would map, so the
/// values are the same), and every rank receives every rank's rows. Every rank therefore sees the whole, identical
/// output and code after Transform (Evaluate, writing results on rank 0) runs unchanged.
/// <para>It is a collective: every rank must read the transformed data the same way (same columns, to the end, or to
/// the same row). A rank that reads alone waits for the others and, after the collective time limit, aborts the job
/// with a message saying so; turn it off with <c>FinetuneTransformer.DistributedScoring = false</c> for rank-0-only
/// scoring.</para>
/// </summary>
internal sealed class DistributedBatchMapper(IBatchColumnMapper inner, Communicator comm) : IBatchColumnMapper
{
    public IReadOnlyList<string> InputColumns => inner.InputColumns;
    public IReadOnlyList<(string Name, DataViewType Type)> OutputColumns => inner.OutputColumns;
    public int BatchSize => Math.Max(1, inner.BatchSize) * comm.Size;

    public object[][] MapBatch(IReadOnlyList<object[]> inputs)
    {
        int size = Math.Max(1, inner.BatchSize);
        var mine = inputs.Skip(comm.Rank * size).Take(size).ToList();
        var mapped = mine.Count > 0 ? inner.MapBatch(mine) : [];
        return comm.AllGather(Write(mapped)).SelectMany(Read).ToArray();
    }

    // Values a mapper may return (IBatchColumnMapper): string, float, double, int, long, bool, float[].
    static byte[] Write(object[][] rows)
    {
        using var stream = new MemoryStream();
        using var w = new BinaryWriter(stream);
        w.Write(rows.Length);
        foreach (var row in rows)
        {
            w.Write(row.Length);
            foreach (var v in row)
                switch (v)
                {
                    case string s: w.Write((byte)0); w.Write(s); break;
                    case float f: w.Write((byte)1); w.Write(f); break;
                    case double d: w.Write((byte)2); w.Write(d); break;
                    case int i: w.Write((byte)3); w.Write(i); break;
                    case long l: w.Write((byte)4); w.Write(l); break;
                    case bool b: w.Write((byte)5); w.Write(b); break;
                    case float[] a: w.Write((byte)6); w.Write(a.Length); foreach (var x in a) w.Write(x); break;
                    default: throw new NotSupportedException($"distributed scoring cannot send a value of type {v?.GetType().Name ?? "null"}");
                }
        }
        w.Flush();
        return stream.ToArray();
    }

    static object[][] Read(byte[] bytes)
    {
        using var r = new BinaryReader(new MemoryStream(bytes));
        var rows = new object[r.ReadInt32()][];
        for (int k = 0; k < rows.Length; k++)
        {
            var row = rows[k] = new object[r.ReadInt32()];
            for (int c = 0; c < row.Length; c++)
                row[c] = r.ReadByte() switch
                {
                    0 => r.ReadString(),
                    1 => r.ReadSingle(),
                    2 => r.ReadDouble(),
                    3 => r.ReadInt32(),
                    4 => r.ReadInt64(),
                    5 => r.ReadBoolean(),
                    6 => Enumerable.Range(0, r.ReadInt32()).Select(_ => r.ReadSingle()).ToArray(),
                    var t => throw new InvalidDataException($"distributed scoring: unknown value tag {t}"),
                };
        }
        return rows;
    }
}
