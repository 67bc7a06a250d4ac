// Dumps every column of an IDataView to JSON with floats as their exact bit patterns, so two processes'
// outputs can be compared for bit-identity. Shared by the tests and the load probe.
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace ML.Finetune.Testing;

public static class DataViewDump
{
    public static string ToJson(IDataView view)
    {
        var rows = new List<Dictionary<string, object>>();
        var cols = view.Schema.Where(c => !c.IsHidden).ToArray();
        using var cursor = view.GetRowCursor(cols);
        while (cursor.MoveNext())
        {
            var row = new Dictionary<string, object>();
            foreach (var c in cols) row[c.Name] = Read(cursor, c);
            rows.Add(row);
        }
        return JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true });
    }

    private static object Read(DataViewRow row, DataViewSchema.Column col)
    {
        var t = col.Type;
        if (t is TextDataViewType) { var v = default(ReadOnlyMemory<char>); row.GetGetter<ReadOnlyMemory<char>>(col)(ref v); return v.ToString(); }
        if (t == NumberDataViewType.Single) { float v = 0; row.GetGetter<float>(col)(ref v); return Bits(v); }
        if (t == NumberDataViewType.Double) { double v = 0; row.GetGetter<double>(col)(ref v); return BitConverter.DoubleToInt64Bits(v).ToString("x16"); }
        if (t == NumberDataViewType.Int32) { int v = 0; row.GetGetter<int>(col)(ref v); return v; }
        if (t == NumberDataViewType.Int64) { long v = 0; row.GetGetter<long>(col)(ref v); return v; }
        if (t == BooleanDataViewType.Instance) { bool v = false; row.GetGetter<bool>(col)(ref v); return v; }
        if (t is VectorDataViewType vt && vt.ItemType == NumberDataViewType.Single)
        {
            var v = default(VBuffer<float>); row.GetGetter<VBuffer<float>>(col)(ref v);
            return v.DenseValues().Select(Bits).ToArray();
        }
        return $"<{t}>";
    }

    private static string Bits(float v) => BitConverter.SingleToInt32Bits(v).ToString("x8");
}
