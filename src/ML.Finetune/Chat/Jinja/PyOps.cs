using System.Globalization;
using System.Text;

namespace ML.Finetune.Chat.Jinja;

/// <summary>Python semantics of the operations templates apply to values: truth, equality, ordering, arithmetic, str() and repr().</summary>
internal static class PyOps
{
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        Markup => "Markup",
        List<object?> => "list",
        PyTuple => "tuple",
        PyDict => "dict",
        Undefined => "Undefined",
        Namespace => "Namespace",
        PyIterator it => it.TypeName,
        PyRange => "range",
        PyDictView view => "dict_" + view.Kind,
        LoopContext => "LoopContext",
        Macro => "Macro",
        PyCallable => "builtin_function_or_method",
        _ => v.GetType().Name,
    };

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static bool IsHashable(object? v) => v is null or bool or long or double or string or Markup
        || (v is PyTuple t && t.Items.All(IsHashable));

    public static bool Truthy(object? v) => v switch
    {
        null => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        Markup m => m.Value.Length > 0,
        List<object?> l => l.Count > 0,
        PyTuple t => t.Items.Count > 0,
        PyDict d => d.Count > 0,
        Undefined => false,
        PyRange r => r.Count > 0,
        PyDictView view => view.Dict.Count > 0,
        _ => true,
    };

    // ---- equality and ordering ----

    public static bool PyEquals(object? a, object? b)
    {
        if (a is Markup ma) a = ma.Value;
        if (b is Markup mb) b = mb.Value;
        switch (a)
        {
            case null: return b is null;
            case string s: return b is string t && s == t;
            case bool or long or double when IsNumber(b):
                if (a is double || b is double) return ToDouble(a) == ToDouble(b);
                return ToLong(a) == ToLong(b);
            case List<object?> la: return b is List<object?> lb && SequenceEquals(la, lb);
            case PyTuple ta: return b is PyTuple tb && SequenceEquals(ta.Items, tb.Items);
            case PyDict da:
                if (b is not PyDict db || da.Count != db.Count) return false;
                foreach (var kv in da.Items)
                    if (!db.TryGet(kv.Key, out var other) || !PyEquals(kv.Value, other)) return false;
                return true;
            case Undefined: return b is Undefined;
            case PyRange ra: return b is PyRange rb && ra.Count == rb.Count && (ra.Count == 0 || (ra.Start == rb.Start && (ra.Count == 1 || ra.Step == rb.Step)));
            default: return ReferenceEquals(a, b);
        }
    }

    private static bool SequenceEquals(IReadOnlyList<object?> a, IReadOnlyList<object?> b)
    {
        if (a.Count != b.Count) return false;
        for (int i = 0; i < a.Count; i++)
            if (!PyEquals(a[i], b[i])) return false;
        return true;
    }

    /// <summary>Python's <c>&lt;</c> ordering; TypeError for types Python cannot order.</summary>
    public static int Compare(object? a, object? b, string op)
    {
        if (a is Undefined ua) throw ua.Fail();
        if (b is Undefined ub) throw ub.Fail();
        if (a is Markup ma) a = ma.Value;
        if (b is Markup mb) b = mb.Value;
        if (IsNumber(a) && IsNumber(b))
        {
            if (a is double || b is double)
            {
                double x = ToDouble(a), y = ToDouble(b);
                if (double.IsNaN(x) || double.IsNaN(y)) return int.MinValue; // every comparison with NaN is false
                return x.CompareTo(y);
            }
            return ToLong(a).CompareTo(ToLong(b));
        }
        if (a is string sa && b is string sb) return PyText.Compare(sa, sb);
        if ((a is List<object?> && b is List<object?>) || (a is PyTuple && b is PyTuple))
        {
            var x = a is PyTuple tx ? tx.Items : (List<object?>)a;
            var y = b is PyTuple ty ? ty.Items : (List<object?>)b!;
            for (int i = 0; i < Math.Min(x.Count, y.Count); i++)
                if (!PyEquals(x[i], y[i])) return Compare(x[i], y[i], op);
            return x.Count.CompareTo(y.Count);
        }
        throw PyError.Type($"'{op}' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    public static bool CompareOp(string op, object? a, object? b)
    {
        switch (op)
        {
            case "==": return PyEquals(a, b);
            case "!=": return !PyEquals(a, b);
        }
        int c = Compare(a, b, op);
        if (c == int.MinValue) return false;
        return op switch
        {
            "<" => c < 0,
            "<=" => c <= 0,
            ">" => c > 0,
            ">=" => c >= 0,
            _ => throw new InvalidOperationException(op),
        };
    }

    /// <summary>Python's <c>item in container</c>.</summary>
    public static bool Contains(object? container, object? item)
    {
        switch (container)
        {
            case string s:
                if (item is Markup m) item = m.Value;
                if (item is not string sub) throw PyError.Type($"'in <string>' requires string as left operand, not {TypeName(item)}");
                return s.Contains(sub, StringComparison.Ordinal);
            case Markup mk: return Contains(mk.Value, item);
            case PyDict d: return d.ContainsKey(item);
            case PyDictView { Kind: "keys" } v: return v.Dict.ContainsKey(item);
            case Namespace: throw PyError.Type("argument of type 'Namespace' is not iterable");
            case PyRange r:
                if (item is long or bool)
                {
                    long x = ToLong(item);
                    return r.Enumerate().Any(v => (long)v! == x);
                }
                return r.Enumerate().Any(v => PyEquals(v, item));
        }
        foreach (var x in PyIter.Iterate(container))
            if (PyEquals(x, item)) return true;
        return false;
    }

    // ---- numbers ----

    public static long ToLong(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        _ => throw PyError.Type($"an integer is required, not '{TypeName(v)}'"),
    };

    public static double ToDouble(object? v) => v switch
    {
        double d => d,
        long l => l,
        bool b => b ? 1 : 0,
        _ => throw PyError.Type($"must be real number, not {TypeName(v)}"),
    };

    /// <summary>An int usable as an index (Python's <c>__index__</c>).</summary>
    public static long ToIndex(object? v, string what) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        Undefined u => throw u.Fail(),
        _ => throw PyError.Type($"{what} must be integers or None, not {TypeName(v)}"),
    };

    private static long Checked(Func<long> f)
    {
        try { return f(); }
        catch (OverflowException) { throw PyError.Unsupported("integer arithmetic beyond 64 bits"); }
    }

    public static object? Binary(string op, object? a, object? b)
    {
        if (a is Undefined ua) throw ua.Fail();
        if (b is Undefined ub) throw ub.Fail();
        if (IsNumber(a) && IsNumber(b)) return Arithmetic(op, a, b);
        switch (op)
        {
            case "+":
                if (a is Markup || b is Markup) return MarkupConcat(a, b);
                if (a is string s1 && b is string s2) return s1 + s2;
                if (a is List<object?> l1 && b is List<object?> l2) return new List<object?>(l1.Concat(l2));
                if (a is PyTuple t1 && b is PyTuple t2) return new PyTuple(t1.Items.Concat(t2.Items).ToArray());
                break;
            case "*":
                if (Repeatable(a) && b is long or bool) return Repeat(a, ToLong(b));
                if (Repeatable(b) && a is long or bool) return Repeat(b, ToLong(a));
                break;
            case "%":
                if (a is string fmt) return PyFormat.Percent(fmt, b);
                break;
        }
        throw PyError.Type($"unsupported operand type(s) for {op}: '{TypeName(a)}' and '{TypeName(b)}'");
    }

    private static bool Repeatable(object? v) => v is string or List<object?> or PyTuple;

    private static object Repeat(object? seq, long n)
    {
        if (n < 0) n = 0;
        return seq switch
        {
            string s => new StringBuilder().Insert(0, s, (int)n).ToString(),
            List<object?> l => Enumerable.Range(0, (int)n).SelectMany(_ => l).ToList(),
            PyTuple t => new PyTuple(Enumerable.Range(0, (int)n).SelectMany(_ => t.Items).ToArray()),
            _ => throw new InvalidOperationException(),
        };
    }

    private static Markup MarkupConcat(object? a, object? b) =>
        new((a is Markup ma ? ma.Value : PyFormat.Escape(Str(a))) + (b is Markup mb ? mb.Value : PyFormat.Escape(Str(b))));

    private static object Arithmetic(string op, object? a, object? b)
    {
        if (op == "/")
        {
            double y = ToDouble(b);
            if (y == 0) throw PyError.Type("division by zero");
            return ToDouble(a) / y;
        }
        if (a is double || b is double)
        {
            double x = ToDouble(a), y = ToDouble(b);
            switch (op)
            {
                case "+": return x + y;
                case "-": return x - y;
                case "*": return x * y;
                case "**":
                    if (x == 0 && y < 0) throw PyError.Type("zero to a negative power");
                    if (x < 0 && y != Math.Floor(y)) throw PyError.Unsupported("complex result of a power");
                    return Math.Pow(x, y);
                case "//":
                case "%":
                    if (y == 0) throw PyError.Type("float floor division by zero");
                    var (div, mod) = FloatDivMod(x, y);
                    return op == "//" ? div : mod;
            }
        }
        else
        {
            long x = ToLong(a), y = ToLong(b);
            switch (op)
            {
                case "+": return Checked(() => checked(x + y));
                case "-": return Checked(() => checked(x - y));
                case "*": return Checked(() => checked(x * y));
                case "**":
                    if (y < 0)
                    {
                        if (x == 0) throw PyError.Type("zero to a negative power");
                        return Math.Pow(x, y);
                    }
                    return Checked(() =>
                    {
                        long result = 1;
                        for (long i = 0; i < y; i++) result = checked(result * x);
                        return result;
                    });
                case "//":
                case "%":
                    if (y == 0) throw PyError.Type("integer division or modulo by zero");
                    long q = x / y, r = x % y;
                    if (r != 0 && (r < 0) != (y < 0)) { q--; r += y; }
                    return op == "//" ? q : r;
            }
        }
        throw new InvalidOperationException(op);
    }

    // CPython's float_divmod.
    private static (double Div, double Mod) FloatDivMod(double vx, double wx)
    {
        double mod = vx % wx; // C#'s % on doubles is C's fmod
        double div = (vx - mod) / wx;
        if (mod != 0)
        {
            if ((wx < 0) != (mod < 0))
            {
                mod += wx;
                div -= 1.0;
            }
        }
        else mod = wx < 0 ? -0.0 : 0.0;
        double floordiv;
        if (div != 0)
        {
            floordiv = Math.Floor(div);
            if (div - floordiv > 0.5) floordiv += 1.0;
        }
        else floordiv = vx / wx < 0 ? -0.0 : 0.0;
        return (floordiv, mod);
    }

    public static object Negate(object? v) => v switch
    {
        long l => (object)Checked(() => checked(-l)),
        bool b => b ? -1L : 0L,
        double d => -d,
        Undefined u => throw u.Fail(),
        _ => throw PyError.Type($"bad operand type for unary -: '{TypeName(v)}'"),
    };

    public static object Plus(object? v) => v switch
    {
        long l => (object)l,
        bool b => b ? 1L : 0L,
        double d => d,
        Undefined u => throw u.Fail(),
        _ => throw PyError.Type($"bad operand type for unary +: '{TypeName(v)}'"),
    };

    // ---- str() and repr() ----

    /// <summary>Python's <c>str(value)</c>, which is what <c>{{ value }}</c> prints.</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        Markup m => m.Value,
        Undefined => "",
        _ => Repr(v),
    };

    public static string Repr(object? v)
    {
        switch (v)
        {
            case null: return "None";
            case bool b: return b ? "True" : "False";
            case long l: return l.ToString(CultureInfo.InvariantCulture);
            case double d: return PyNumber.FloatRepr(d);
            case string s: return StringRepr(s);
            case Markup m: return "Markup(" + StringRepr(m.Value) + ")";
            case Undefined: return "Undefined";
            case List<object?> list: return "[" + string.Join(", ", list.Select(Repr)) + "]";
            case PyTuple t: return t.Items.Count == 1 ? "(" + Repr(t.Items[0]) + ",)" : "(" + string.Join(", ", t.Items.Select(Repr)) + ")";
            case PyDict d: return "{" + string.Join(", ", d.Items.Select(kv => Repr(kv.Key) + ": " + Repr(kv.Value))) + "}";
            case Namespace ns: return "<Namespace " + Repr(ns.Attributes) + ">";
            case PyRange r: return r.Step == 1 ? $"range({r.Start}, {r.Stop})" : $"range({r.Start}, {r.Stop}, {r.Step})";
            case PyDictView view: return $"dict_{view.Kind}([" + string.Join(", ", view.Enumerate().Select(Repr)) + "])";
            default:
                // Python prints these with a memory address: nothing a reference could match.
                throw PyError.Unsupported($"printing a {TypeName(v)} object");
        }
    }

    public static string StringRepr(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder(s.Length + 2).Append(quote);
        foreach (int cp in PyText.Runes(s))
        {
            if (cp == quote || cp == '\\') sb.Append('\\').Append((char)cp);
            else if (cp == '\t') sb.Append("\\t");
            else if (cp == '\n') sb.Append("\\n");
            else if (cp == '\r') sb.Append("\\r");
            else if (cp < 0x20 || cp == 0x7F) sb.Append("\\x").Append(cp.ToString("x2", CultureInfo.InvariantCulture));
            else if (cp < 0x7F || IsPrintable(cp)) PyText.AppendRune(sb, cp);
            else if (cp <= 0xFF) sb.Append("\\x").Append(cp.ToString("x2", CultureInfo.InvariantCulture));
            else if (cp <= 0xFFFF) sb.Append("\\u").Append(cp.ToString("x4", CultureInfo.InvariantCulture));
            else sb.Append("\\U").Append(cp.ToString("x8", CultureInfo.InvariantCulture));
        }
        return sb.Append(quote).ToString();
    }

    /// <summary>Python's <c>str.isprintable</c> for one code point.</summary>
    public static bool IsPrintable(int cp)
    {
        if (cp == ' ') return true;
        if (cp is >= 0xD800 and <= 0xDFFF) return false;
        return CharUnicodeInfo.GetUnicodeCategory(cp) switch
        {
            UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse
                or UnicodeCategory.OtherNotAssigned or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator
                or UnicodeCategory.SpaceSeparator => false,
            _ => true,
        };
    }
}
