using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ML.Finetune.Chat.Jinja;

/// <summary>JSON in and out with Python's semantics: <c>json.dumps</c> (what transformers' <c>tojson</c> filter calls) and <c>json.loads</c> typing.</summary>
internal static class PyJson
{
    /// <summary>
    /// <c>json.dumps(value, ensure_ascii, indent, separators, sort_keys)</c>. <paramref name="indent"/> is null, an int
    /// (spaces) or a string; <paramref name="separators"/> null or (item, key) separators.
    /// </summary>
    public static string Dumps(object? value, bool ensureAscii = false, object? indent = null, (string Item, string Key)? separators = null, bool sortKeys = false)
    {
        string? indentText = indent switch
        {
            null => null,
            string s => s,
            long n => new string(' ', (int)Math.Max(0, n)),
            bool b => new string(' ', b ? 1 : 0),
            _ => throw PyError.Type($"indent must be an int or a string, not {PyOps.TypeName(indent)}"),
        };
        var (item, key) = separators ?? (indentText is null ? (", ", ": ") : (",", ": "));
        var sb = new StringBuilder();
        Write(sb, value, ensureAscii, indentText, item, key, sortKeys, 0);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object? v, bool ascii, string? indent, string itemSep, string keySep, bool sortKeys, int level)
    {
        switch (v)
        {
            case null: sb.Append("null"); return;
            case bool b: sb.Append(b ? "true" : "false"); return;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); return;
            case double d: sb.Append(FloatText(d)); return;
            case string s: WriteString(sb, s, ascii); return;
            case Markup m: WriteString(sb, m.Value, ascii); return;
            case List<object?> or PyTuple:
                var items = v is PyTuple t ? t.Items : (List<object?>)v;
                if (items.Count == 0) { sb.Append("[]"); return; }
                sb.Append('[');
                for (int i = 0; i < items.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    NewLine(sb, indent, level + 1);
                    Write(sb, items[i], ascii, indent, itemSep, keySep, sortKeys, level + 1);
                }
                NewLine(sb, indent, level);
                sb.Append(']');
                return;
            case PyDict dict:
                if (dict.Count == 0) { sb.Append("{}"); return; }
                var pairs = dict.Items.ToList();
                if (sortKeys) pairs = SortByKey(pairs);
                sb.Append('{');
                for (int i = 0; i < pairs.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    NewLine(sb, indent, level + 1);
                    WriteString(sb, KeyText(pairs[i].Key), ascii);
                    sb.Append(keySep);
                    Write(sb, pairs[i].Value, ascii, indent, itemSep, keySep, sortKeys, level + 1);
                }
                NewLine(sb, indent, level);
                sb.Append('}');
                return;
            default:
                throw PyError.Type($"Object of type {PyOps.TypeName(v)} is not JSON serializable");
        }
    }

    private static List<KeyValuePair<object?, object?>> SortByKey(List<KeyValuePair<object?, object?>> pairs)
    {
        var sorted = pairs.ToList();
        // Python's sorted() is stable; a stable merge sort keeps equal keys in order.
        return sorted.OrderBy(p => p.Key, Comparer<object?>.Create((a, b) => PyOps.Compare(a, b, "<"))).ToList();
    }

    private static void NewLine(StringBuilder sb, string? indent, int level)
    {
        if (indent is null) return;
        sb.Append('\n');
        for (int i = 0; i < level; i++) sb.Append(indent);
    }

    private static string KeyText(object? key) => key switch
    {
        string s => s,
        Markup m => m.Value,
        bool b => b ? "true" : "false",
        null => "null",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatText(d),
        _ => throw PyError.Type($"keys must be str, int, float, bool or None, not {PyOps.TypeName(key)}"),
    };

    private static string FloatText(double d) =>
        double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : PyNumber.FloatRepr(d);

    private static void WriteString(StringBuilder sb, string s, bool ascii)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    // UTF-16 units are exactly what ensure_ascii writes for astral characters (a surrogate pair).
                    if (c < 0x20 || (ascii && c > 0x7E)) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    /// <summary>Converts parsed JSON to Python values as <c>json.loads</c> types them (integers stay int, "1.0" is float).</summary>
    public static object? FromElement(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => ObjectFromElement(e),
        JsonValueKind.Array => e.EnumerateArray().Select(FromElement).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => NumberFromText(e.GetRawText()),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    private static PyDict ObjectFromElement(JsonElement e)
    {
        var d = new PyDict();
        foreach (var p in e.EnumerateObject()) d.Set(p.Name, FromElement(p.Value));
        return d;
    }

    private static object NumberFromText(string raw)
    {
        if (raw.IndexOfAny(new[] { '.', 'e', 'E' }) < 0)
        {
            if (long.TryParse(raw, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l)) return l;
            throw PyError.Unsupported($"integer {raw} beyond 64 bits");
        }
        return double.Parse(raw, NumberStyles.Float, CultureInfo.InvariantCulture);
    }

    /// <summary>Converts a System.Text.Json node to Python values.</summary>
    public static object? FromNode(JsonNode? node)
    {
        switch (node)
        {
            case null: return null;
            case JsonObject o:
                var d = new PyDict();
                foreach (var kv in o) d.Set(kv.Key, FromNode(kv.Value));
                return d;
            case JsonArray a: return a.Select(FromNode).ToList();
            case JsonValue v:
                if (v.TryGetValue(out JsonElement element)) return FromElement(element);
                if (v.TryGetValue(out string? s)) return s;
                if (v.TryGetValue(out bool b)) return b;
                if (v.TryGetValue(out long l)) return l;
                if (v.TryGetValue(out int i)) return (long)i;
                if (v.TryGetValue(out double dbl)) return dbl;
                if (v.TryGetValue(out float f)) return (double)f;
                if (v.TryGetValue(out decimal m)) return (double)m;
                return FromElement(JsonSerializer.SerializeToElement(v));
            default: throw new ArgumentException($"Unsupported JSON node {node.GetType().Name}.");
        }
    }

    /// <summary>Converts .NET values (primitives, JSON nodes, lists, dictionaries) passed as template variables.</summary>
    public static object? FromClr(object? value) => value switch
    {
        null => null,
        string or bool or long or double => value,
        int i => (long)i,
        short s => (long)s,
        byte b => (long)b,
        uint u => (long)u,
        float f => (double)f,
        decimal m => (double)m,
        JsonNode n => FromNode(n),
        JsonElement e => FromElement(e),
        System.Collections.IDictionary dict => DictFromClr(dict),
        System.Collections.IEnumerable list => list.Cast<object?>().Select(FromClr).ToList(),
        _ => throw new ArgumentException($"Template variables must be strings, numbers, booleans, JSON nodes, lists or dictionaries; got {value.GetType().Name}."),
    };

    private static PyDict DictFromClr(System.Collections.IDictionary dict)
    {
        var d = new PyDict();
        foreach (System.Collections.DictionaryEntry kv in dict) d.Set(FromClr(kv.Key), FromClr(kv.Value));
        return d;
    }
}
