namespace ML.Finetune.Chat.Jinja;

/// <summary>
/// Attribute and item access as jinja2's <c>ImmutableSandboxedEnvironment</c> resolves them:
/// <c>x.name</c> tries the Python attribute first, then <c>x["name"]</c>; <c>x[key]</c> tries the item first, then
/// the attribute; what is found neither way is <see cref="Undefined"/>. Methods that would change a list or dict
/// are refused, as the immutable sandbox refuses them.
/// </summary>
internal static class PyObjects
{
    private static readonly HashSet<string> s_strMethods = new(StringComparer.Ordinal)
    {
        "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format", "format_map", "index",
        "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric", "isprintable", "isspace",
        "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans", "partition", "removeprefix", "removesuffix", "replace",
        "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase",
        "title", "translate", "upper", "zfill",
    };
    private static readonly HashSet<string> s_dictMethods = new(StringComparer.Ordinal) { "clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem", "setdefault", "update", "values" };
    private static readonly HashSet<string> s_dictMutators = new(StringComparer.Ordinal) { "clear", "pop", "popitem", "setdefault", "update" };
    private static readonly HashSet<string> s_listMethods = new(StringComparer.Ordinal) { "append", "clear", "copy", "count", "extend", "index", "insert", "pop", "remove", "reverse", "sort" };
    private static readonly HashSet<string> s_listMutators = new(StringComparer.Ordinal) { "append", "clear", "pop", "reverse", "insert", "sort", "extend", "remove" };
    private static readonly HashSet<string> s_numberAttributes = new(StringComparer.Ordinal)
    {
        "real", "imag", "numerator", "denominator", "conjugate", "bit_length", "bit_count", "to_bytes", "from_bytes", "as_integer_ratio", "is_integer", "hex", "fromhex",
    };

    /// <summary><c>obj.name</c>.</summary>
    public static object? GetAttr(object? obj, string name)
    {
        if (obj is Undefined u) throw u.Fail();
        if (TryAttribute(obj, name, out var value)) return value;
        if (obj is PyDict dict && dict.TryGet(name, out var item)) return item;
        return Undefined.Member(obj, name);
    }

    /// <summary>Python's <c>getattr(obj, name)</c> alone, without the item fallback (the <c>attr</c> filter).</summary>
    public static object? GetAttrOnly(object? obj, string name)
    {
        if (obj is Undefined u) throw u.Fail();
        return TryAttribute(obj, name, out var value) ? value : Undefined.Member(obj, name);
    }

    /// <summary><c>obj[key]</c>.</summary>
    public static object? GetItem(object? obj, object? key)
    {
        if (obj is Undefined u) throw u.Fail();
        if (TryItem(obj, key, out var value)) return value;
        if (key is string name && TryAttribute(obj, name, out value)) return value;
        return Undefined.Member(obj, key);
    }

    /// <summary><c>obj[start:stop:step]</c>.</summary>
    public static object? GetSlice(object? obj, object? start, object? stop, object? step)
    {
        switch (obj)
        {
            case Undefined u: throw u.Fail();
            case string s: return PyText.Slice(s, start, stop, step);
            case Markup m: return new Markup(PyText.Slice(m.Value, start, stop, step));
            case List<object?> l: return SliceList(l, start, stop, step);
            case PyTuple t: return new PyTuple(SliceList(t.Items, start, stop, step));
            case PyRange r:
                var (a, _, st, n) = PyText.SliceIndices(r.Count, start, stop, step);
                return new PyRange(r.Start + a * r.Step, r.Start + (a + n * st) * r.Step, r.Step * st);
            default: return Undefined.Member(obj, "slice");
        }
    }

    private static List<object?> SliceList(IReadOnlyList<object?> items, object? start, object? stop, object? step)
    {
        var (a, _, st, n) = PyText.SliceIndices(items.Count, start, stop, step);
        var result = new List<object?>((int)n);
        for (long i = 0, p = a; i < n; i++, p += st) result.Add(items[(int)p]);
        return result;
    }

    private static bool TryItem(object? obj, object? key, out object? value)
    {
        value = null;
        switch (obj)
        {
            case PyDict d:
                if (!PyOps.IsHashable(key)) return false;
                return d.TryGet(key, out value);
            case List<object?> l:
                return TryIndex(l, key, out value);
            case PyTuple t:
                return TryIndex(t.Items, key, out value);
            case string s when key is long or bool:
                long i = PyOps.ToLong(key);
                long n = PyText.Length(s);
                if (i < -n || i >= n) return false;
                value = PyText.Index(s, i);
                return true;
            case Markup m when key is long or bool:
                return TryItem(m.Value, key, out value);
            case PyRange r when key is long or bool:
                long k = PyOps.ToLong(key);
                if (k < 0) k += r.Count;
                if (k < 0 || k >= r.Count) return false;
                value = r.Start + k * r.Step;
                return true;
            default:
                return false;
        }
    }

    private static bool TryIndex(IReadOnlyList<object?> items, object? key, out object? value)
    {
        value = null;
        if (key is not (long or bool)) return false;
        long i = PyOps.ToLong(key);
        if (i < 0) i += items.Count;
        if (i < 0 || i >= items.Count) return false;
        value = items[(int)i];
        return true;
    }

    private static bool TryAttribute(object? obj, string name, out object? value)
    {
        value = null;
        if (name.StartsWith('_'))
        {
            // Jinja's sandbox refuses private and dunder attributes.
            if (HasPythonAttribute(obj, name))
            {
                value = Undefined.WithHint($"access to attribute '{name}' of '{PyOps.TypeName(obj)}' object is unsafe.");
                return true;
            }
            return false;
        }
        switch (obj)
        {
            case string s when s_strMethods.Contains(name):
                value = StringMethods.Bind(s, name);
                return true;
            case Markup m when s_strMethods.Contains(name):
                value = StringMethods.Bind(m.Value, name);
                return true;
            case PyDict d when s_dictMethods.Contains(name):
                value = s_dictMutators.Contains(name) ? Unsafe(name, "dict") : CollectionMethods.BindDict(d, name);
                return true;
            case List<object?> l when s_listMethods.Contains(name):
                value = s_listMutators.Contains(name) ? Unsafe(name, "list") : CollectionMethods.BindList(l, name);
                return true;
            case PyTuple t when name is "count" or "index":
                value = CollectionMethods.BindList(t.Items, name);
                return true;
            case Namespace ns:
                return ns.Attributes.TryGet(name, out value);
            case LoopContext loop:
                value = loop.GetAttribute(name);
                return value is not Undefined;
            case long or double or bool when s_numberAttributes.Contains(name):
                throw PyError.Unsupported($"attribute '{name}' of {PyOps.TypeName(obj)}");
            case PyRange r when name is "start" or "stop" or "step":
                value = name == "start" ? r.Start : name == "stop" ? r.Stop : r.Step;
                return true;
            case PyCallable or PyIterator or PyDictView or PyRange:
                throw PyError.Unsupported($"attribute '{name}' of a {PyOps.TypeName(obj)} object");
            default:
                return false;
        }
    }

    private static bool HasPythonAttribute(object? obj, string name) => name.StartsWith("__", StringComparison.Ordinal) && name.EndsWith("__", StringComparison.Ordinal);

    private static Undefined Unsafe(string name, string type) => Undefined.WithHint($"access to attribute '{name}' of '{type}' object is unsafe.");
}
