using System.Globalization;
using System.Text;

namespace ML.Finetune.Chat.Jinja;

/// <summary>
/// The global functions a chat template sees: jinja2's defaults (<c>range</c>, <c>dict</c>, <c>namespace</c>) and
/// transformers' additions (<c>raise_exception</c>, <c>strftime_now</c>).
/// </summary>
internal static class Globals
{
    private const long MaxRange = 100_000; // jinja2.sandbox.MAX_RANGE

    public static Dictionary<string, object?> Create(Func<DateTime> now) => new(StringComparer.Ordinal)
    {
        ["range"] = new BuiltinFunction("range", (_, a) => Range(a)),
        ["dict"] = new BuiltinFunction("dict", (_, a) => Dict(a)),
        ["namespace"] = new BuiltinFunction("namespace", (_, a) => Namespace(a)),
        ["raise_exception"] = new BuiltinFunction("raise_exception", (_, a) =>
            throw PyError.Raised(PyOps.Str(a.Bind("raise_exception", 1, "message")[0]))),
        ["strftime_now"] = new BuiltinFunction("strftime_now", (_, a) =>
            StrFTime(now(), StringMethods.RequireString(a.Bind("strftime_now", 1, "format")[0], "strftime_now"))),
        ["lipsum"] = Unsupported("lipsum"),
        ["cycler"] = Unsupported("cycler"),
        ["joiner"] = Unsupported("joiner"),
    };

    private static BuiltinFunction Unsupported(string name) => new(name, (_, _) => throw PyError.Unsupported($"global function '{name}'"));

    private static PyRange Range(CallArgs a)
    {
        if (a.Keywords.Count > 0) throw PyError.Type("range() takes no keyword arguments");
        var p = a.Positional.Select(x => PyOps.ToIndex(x, "range() arguments")).ToList();
        var range = p.Count switch
        {
            1 => new PyRange(0, p[0], 1),
            2 => new PyRange(p[0], p[1], 1),
            3 => new PyRange(p[0], p[1], p[2]),
            _ => throw PyError.Type($"range expected at most 3 arguments, got {p.Count}"),
        };
        if (range.Count > MaxRange)
            throw PyError.Type($"Range too big. The sandbox blocks ranges larger than MAX_RANGE ({MaxRange}).");
        return range;
    }

    private static PyDict Dict(CallArgs a)
    {
        var d = new PyDict();
        if (a.Positional.Count > 1) throw PyError.Type($"dict expected at most 1 argument, got {a.Positional.Count}");
        if (a.Positional.Count == 1)
        {
            if (a.Positional[0] is PyDict source)
                foreach (var kv in source.Items) d.Set(kv.Key, kv.Value);
            else
                foreach (var pair in PyIter.Iterate(a.Positional[0]))
                {
                    var kv = PyIter.ToList(pair);
                    if (kv.Count != 2) throw PyError.Type("dictionary update sequence element has wrong length; 2 is required");
                    d.Set(kv[0], kv[1]);
                }
        }
        foreach (var kv in a.Keywords) d.Set(kv.Key, kv.Value);
        return d;
    }

    private static Namespace Namespace(CallArgs a)
    {
        var ns = new Namespace();
        if (a.Positional.Count > 1) throw PyError.Type($"namespace expected at most 1 argument, got {a.Positional.Count}");
        if (a.Positional.Count == 1)
            foreach (var kv in Dict(new CallArgs(a.Positional, Array.Empty<KeyValuePair<string, object?>>())).Items) ns.Attributes.Set(kv.Key, kv.Value);
        foreach (var kv in a.Keywords) ns.Attributes.Set(kv.Key, kv.Value);
        return ns;
    }

    /// <summary>Python's <c>datetime.strftime</c> (C locale) for the directives chat templates use.</summary>
    public static string StrFTime(DateTime t, string format)
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length)
            {
                sb.Append(format[i]);
                continue;
            }
            char d = format[++i];
            bool noPad = false;
            if (d == '-' && i + 1 < format.Length)
            {
                noPad = true; // glibc extension: %-d, %-m, ...
                d = format[++i];
            }
            string Num(int v, int width) => noPad ? v.ToString(c) : v.ToString(new string('0', width), c);
            sb.Append(d switch
            {
                'd' => Num(t.Day, 2),
                'm' => Num(t.Month, 2),
                'Y' => t.Year.ToString(c),
                'y' => Num(t.Year % 100, 2),
                'H' => Num(t.Hour, 2),
                'I' => Num(t.Hour % 12 == 0 ? 12 : t.Hour % 12, 2),
                'M' => Num(t.Minute, 2),
                'S' => Num(t.Second, 2),
                'f' => (t.Ticks % TimeSpan.TicksPerSecond / 10).ToString("000000", c),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'b' or 'h' => t.ToString("MMM", c),
                'B' => t.ToString("MMMM", c),
                'a' => t.ToString("ddd", c),
                'A' => t.ToString("dddd", c),
                'j' => Num(t.DayOfYear, 3),
                'w' => ((int)t.DayOfWeek).ToString(c),
                'u' => (t.DayOfWeek == DayOfWeek.Sunday ? 7 : (int)t.DayOfWeek).ToString(c),
                'e' => t.Day.ToString(c).PadLeft(2),
                'F' => t.ToString("yyyy-MM-dd", c),
                'T' => t.ToString("HH:mm:ss", c),
                'D' => t.ToString("MM/dd/yy", c),
                '%' => "%",
                _ => throw PyError.Unsupported($"strftime directive '%{d}'"),
            });
        }
        return sb.ToString();
    }
}
