using System.Text.RegularExpressions;

namespace ML.Finetune.Chat.Jinja;

/// <summary>Jinja's filters with jinja2 3.1 semantics, and transformers' <c>tojson</c>.</summary>
internal static partial class Filters
{
    private delegate object? Filter(Interpreter interpreter, object? value, CallArgs args);

    private static readonly Dictionary<string, Filter> s_filters = new(StringComparer.Ordinal)
    {
        ["abs"] = (_, v, a) => { a.Bind("abs", 0); return v switch { long l => (object)Math.Abs(l), double d => Math.Abs(d), bool b => b ? 1L : 0L, _ => throw PyError.Type($"bad operand type for abs(): '{PyOps.TypeName(v)}'") }; },
        ["attr"] = (_, v, a) => PyObjects.GetAttrOnly(v, StringMethods.RequireString(a.Bind("attr", 1, "name")[0], "attr")),
        ["batch"] = Batch,
        ["capitalize"] = (_, v, a) => { a.Bind("capitalize", 0); return PyText.Capitalize(PyOps.Str(v)); },
        ["center"] = (_, v, a) =>
        {
            var b = a.Bind("center", 0, "width");
            return StringMethods.Invoke(PyOps.Str(v), "center", new CallArgs(new[] { Given(b[0]) ? b[0] : 80L }, Array.Empty<KeyValuePair<string, object?>>()));
        },
        ["count"] = Length,
        ["d"] = Default,
        ["default"] = Default,
        ["dictsort"] = DictSort,
        ["e"] = Escape,
        ["escape"] = Escape,
        ["first"] = (_, v, a) =>
        {
            a.Bind("first", 0);
            foreach (var item in PyIter.Iterate(v)) return item;
            return Undefined.WithHint("No first item, sequence was empty.");
        },
        ["float"] = (_, v, a) =>
        {
            var b = a.Bind("float", 0, "default");
            object? fallback = Given(b[0]) ? b[0] : 0.0;
            return v switch
            {
                double d => d,
                long l => (double)l,
                bool x => x ? 1.0 : 0.0,
                string s => PyNumber.TryParseFloat(s, out double parsed) ? parsed : fallback,
                Markup m => PyNumber.TryParseFloat(m.Value, out double parsed2) ? parsed2 : fallback,
                _ => fallback,
            };
        },
        ["forceescape"] = (_, v, a) => { a.Bind("forceescape", 0); return new Markup(PyFormat.Escape(PyOps.Str(v))); },
        ["format"] = (_, v, a) =>
        {
            if (a.Positional.Count > 0 && a.Keywords.Count > 0) throw PyError.Type("can't handle positional and keyword arguments at the same time");
            object? args = a.Keywords.Count > 0 ? KeywordDict(a) : new PyTuple(a.Positional);
            return PyOps.Binary("%", PyOps.Str(v), args);
        },
        ["indent"] = Indent,
        ["int"] = Int,
        ["items"] = (_, v, a) =>
        {
            a.Bind("items", 0);
            if (v is Undefined) return new PyIterator(Array.Empty<object?>(), "generator");
            if (v is not PyDict d) throw PyError.Type("Can only get item pairs from a mapping.");
            return new PyIterator(new PyDictView(d, "items").Enumerate(), "generator");
        },
        ["join"] = (interp, v, a) =>
        {
            var b = a.Bind("join", 0, "d", "attribute");
            string separator = Given(b[0]) ? PyOps.Str(b[0]) : "";
            var items = PyIter.Iterate(v);
            if (Given(b[1]) && b[1] is not null) items = items.Select(AttrGetter(b[1])).ToList();
            return string.Join(separator, items.Select(PyOps.Str));
        },
        ["last"] = (_, v, a) =>
        {
            a.Bind("last", 0);
            var items = v switch
            {
                List<object?> l => l,
                PyTuple t => t.Items,
                string or Markup or PyRange or PyDict or Undefined => PyIter.ToList(v),
                _ => throw PyError.Type($"'{PyOps.TypeName(v)}' object is not reversible"),
            };
            return items.Count > 0 ? items[^1] : Undefined.WithHint("No last item, sequence was empty.");
        },
        ["length"] = Length,
        ["list"] = (_, v, a) => { a.Bind("list", 0); return PyIter.Iterate(v).ToList(); },
        ["lower"] = (_, v, a) => { a.Bind("lower", 0); return PyText.Lower(PyOps.Str(v)); },
        ["map"] = Map,
        ["max"] = (_, v, a) => MinMax(v, a, "max"),
        ["min"] = (_, v, a) => MinMax(v, a, "min"),
        ["reject"] = (interp, v, a) => SelectOrReject(interp, v, a, select: false, byAttribute: false),
        ["rejectattr"] = (interp, v, a) => SelectOrReject(interp, v, a, select: false, byAttribute: true),
        ["replace"] = (_, v, a) =>
        {
            var b = a.Bind("replace", 2, "old", "new", "count");
            long count = Given(b[2]) && b[2] is not null ? PyOps.ToIndex(b[2], "count") : -1;
            return PyText.Replace(PyOps.Str(v), PyOps.Str(b[0]), PyOps.Str(b[1]), count);
        },
        ["reverse"] = (_, v, a) =>
        {
            a.Bind("reverse", 0);
            return v switch
            {
                string s => PyText.Slice(s, null, null, -1L),
                Markup m => PyText.Slice(m.Value, null, null, -1L),
                List<object?> l => new PyIterator(Enumerable.Reverse(l), "list_reverseiterator"),
                PyTuple t => new PyIterator(t.Items.Reverse(), "reversed"),
                PyRange r => new PyIterator(r.Enumerate().Reverse(), "range_iterator"),
                _ => Enumerable.Reverse(PyIter.ToList(v)).ToList(),
            };
        },
        ["round"] = Round,
        ["safe"] = (_, v, a) => { a.Bind("safe", 0); return v is Markup ? v : new Markup(PyOps.Str(v)); },
        ["select"] = (interp, v, a) => SelectOrReject(interp, v, a, select: true, byAttribute: false),
        ["selectattr"] = (interp, v, a) => SelectOrReject(interp, v, a, select: true, byAttribute: true),
        ["slice"] = Slice,
        ["sort"] = Sort,
        ["string"] = (_, v, a) => { a.Bind("string", 0); return v is Markup ? v : PyOps.Str(v); },
        ["sum"] = (_, v, a) =>
        {
            var b = a.Bind("sum", 0, "attribute", "start");
            object? total = Given(b[1]) ? b[1] : 0L;
            var items = PyIter.Iterate(v);
            if (Given(b[0]) && b[0] is not null) items = items.Select(AttrGetter(b[0]));
            foreach (var item in items)
            {
                if (total is string) throw PyError.Type("sum() can't sum strings [use ''.join(seq) instead]");
                total = PyOps.Binary("+", total, item);
            }
            return total;
        },
        ["title"] = (_, v, a) => { a.Bind("title", 0); return JinjaTitle(PyOps.Str(v)); },
        ["tojson"] = ToJson,
        ["trim"] = (_, v, a) =>
        {
            var b = a.Bind("trim", 0, "chars");
            string? chars = Given(b[0]) && b[0] is not null ? PyOps.Str(b[0]) : null;
            return PyText.Strip(PyOps.Str(v), chars, true, true);
        },
        ["truncate"] = Truncate,
        ["unique"] = Unique,
        ["upper"] = (_, v, a) => { a.Bind("upper", 0); return PyText.Upper(PyOps.Str(v)); },
        ["wordcount"] = (_, v, a) => { a.Bind("wordcount", 0); return (long)WordRegex().Matches(PyOps.Str(v)).Count; },
    };

    // jinja2 filters this interpreter does not implement: named so that templates using them fail clearly.
    private static readonly HashSet<string> s_unsupported = new(StringComparer.Ordinal)
    {
        "filesizeformat", "groupby", "pprint", "random", "striptags", "urlencode", "urlize", "wordwrap", "xmlattr",
    };

    public static bool Exists(string name) => s_filters.ContainsKey(name) || s_unsupported.Contains(name);

    public static object? Apply(Interpreter interpreter, string name, object? value, CallArgs args)
    {
        if (!s_filters.TryGetValue(name, out var filter))
            throw s_unsupported.Contains(name) ? PyError.Unsupported($"filter '{name}'") : PyError.Type($"No filter named '{name}' found.");
        return filter(interpreter, value, args);
    }

    private static bool Given(object? bound) => StringMethods.Given(bound);

    private static PyDict KeywordDict(CallArgs a)
    {
        var d = new PyDict();
        foreach (var kv in a.Keywords) d.Set(kv.Key, kv.Value);
        return d;
    }

    private static object? Default(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("default", 0, "default_value", "boolean");
        object? fallback = Given(b[0]) ? b[0] : "";
        bool boolean = Given(b[1]) && PyOps.Truthy(b[1]);
        return v is Undefined || (boolean && !PyOps.Truthy(v)) ? fallback : v;
    }

    private static object? Length(Interpreter _, object? v, CallArgs a)
    {
        a.Bind("length", 0);
        return PyIter.Length(v);
    }

    private static object? Escape(Interpreter _, object? v, CallArgs a)
    {
        a.Bind("escape", 0);
        return v is Markup ? v : new Markup(PyFormat.Escape(PyOps.Str(v)));
    }

    // transformers: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
    private static object? ToJson(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("tojson", 0, "ensure_ascii", "indent", "separators", "sort_keys");
        bool ascii = Given(b[0]) && PyOps.Truthy(b[0]);
        object? indent = Given(b[1]) ? b[1] : null;
        (string, string)? separators = null;
        if (Given(b[2]) && b[2] is not null)
        {
            var parts = PyIter.ToList(b[2]);
            if (parts.Count != 2 || parts[0] is not string item || parts[1] is not string key) throw PyError.Type("separators must be a pair of strings");
            separators = (item, key);
        }
        bool sortKeys = Given(b[3]) && PyOps.Truthy(b[3]);
        return PyJson.Dumps(v, ascii, indent, separators, sortKeys);
    }

    private static object? Int(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("int", 0, "default", "base");
        object? fallback = Given(b[0]) ? b[0] : 0L;
        int numberBase = Given(b[1]) ? (int)PyOps.ToIndex(b[1], "base") : 10;
        switch (v)
        {
            case long or bool: return PyOps.ToLong(v);
            case double d:
                if (double.IsNaN(d) || double.IsInfinity(d)) return fallback;
                return (long)Math.Truncate(d);
            case string or Markup:
                string s = PyOps.Str(v);
                if (PyNumber.TryParseInt(s, numberBase, out long parsed)) return parsed;
                // jinja: "42.23"|int gives 42.
                if (PyNumber.TryParseFloat(s, out double f) && !double.IsNaN(f) && !double.IsInfinity(f)) return (long)Math.Truncate(f);
                return fallback;
            default:
                return fallback;
        }
    }

    private static object? Round(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("round", 0, "precision", "method");
        long precision = Given(b[0]) ? PyOps.ToIndex(b[0], "precision") : 0;
        string method = Given(b[1]) ? PyOps.Str(b[1]) : "common";
        if (method is not ("common" or "ceil" or "floor")) throw PyError.Type("method must be common, ceil or floor");
        if (method == "common")
        {
            // Python's round(int, n) stays an int; round(float, n) is a float.
            if (v is long or bool)
            {
                long n = PyOps.ToLong(v);
                if (precision >= 0) return n;
                return (long)PyNumber.Round(n, precision);
            }
            return PyNumber.Round(PyOps.ToDouble(v), precision);
        }
        var scale = PyOps.Binary("**", 10L, precision);
        double scaled = PyOps.ToDouble(PyOps.Binary("*", v, scale));
        double rounded = method == "ceil" ? Math.Ceiling(scaled) : Math.Floor(scaled);
        return PyOps.Binary("/", (long)rounded, scale);
    }

    private static object? Indent(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("indent", 0, "width", "first", "blank");
        string indentation = Given(b[0]) && b[0] is string w ? w : new string(' ', Given(b[0]) ? (int)PyOps.ToIndex(b[0], "width") : 4);
        bool first = Given(b[1]) && PyOps.Truthy(b[1]);
        bool blank = Given(b[2]) && PyOps.Truthy(b[2]);
        string s = PyOps.Str(v) + "\n";
        var lines = (List<object?>)StringMethods.Invoke(s, "splitlines", CallArgs.Empty)!;
        string result;
        if (blank) result = string.Join("\n" + indentation, lines.Select(PyOps.Str));
        else
        {
            result = PyOps.Str(lines[0]);
            var rest = lines.Skip(1).Select(PyOps.Str).ToList();
            if (rest.Count > 0) result += "\n" + string.Join("\n", rest.Select(line => line.Length > 0 ? indentation + line : line));
        }
        return first ? indentation + result : result;
    }

    private static object? Truncate(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("truncate", 0, "length", "killwords", "end", "leeway");
        string s = PyOps.Str(v);
        long length = Given(b[0]) ? PyOps.ToIndex(b[0], "length") : 255;
        bool killwords = Given(b[1]) && PyOps.Truthy(b[1]);
        string end = Given(b[2]) ? PyOps.Str(b[2]) : "...";
        long leeway = Given(b[3]) && b[3] is not null ? PyOps.ToIndex(b[3], "leeway") : 5;
        int endLen = PyText.Length(end);
        if (length < endLen) throw PyError.Type($"expected length >= {endLen}, got {length}");
        if (PyText.Length(s) <= length + leeway) return s;
        string head = PyText.Slice(s, null, length - endLen, null);
        if (killwords) return head + end;
        return PyOps.Str(PyText.RSplit(head, " ", 1)[0]) + end;
    }

    private static object? Batch(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("batch", 1, "linecount", "fill_with");
        long count = PyOps.ToIndex(b[0], "linecount");
        object? fill = Given(b[1]) ? b[1] : null;
        IEnumerable<object?> Generate()
        {
            var current = new List<object?>();
            foreach (var item in PyIter.Iterate(v))
            {
                if (current.Count == count)
                {
                    yield return current;
                    current = new List<object?>();
                }
                current.Add(item);
            }
            if (current.Count > 0)
            {
                if (fill is not null) while (current.Count < count) current.Add(fill);
                yield return current;
            }
        }
        return new PyIterator(Generate(), "generator");
    }

    private static object? Slice(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("slice", 1, "slices", "fill_with");
        long slices = PyOps.ToIndex(b[0], "slices");
        object? fill = Given(b[1]) ? b[1] : null;
        var seq = PyIter.ToList(v);
        IEnumerable<object?> Generate()
        {
            long perSlice = seq.Count / slices, withExtra = seq.Count % slices, offset = 0;
            for (long n = 0; n < slices; n++)
            {
                long start = offset + n * perSlice;
                if (n < withExtra) offset++;
                long end = offset + (n + 1) * perSlice;
                var part = seq.Skip((int)start).Take((int)(end - start)).ToList();
                if (fill is not null && n >= withExtra) part.Add(fill);
                yield return part;
            }
        }
        return new PyIterator(Generate(), "generator");
    }

    private static object? DictSort(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("dictsort", 0, "case_sensitive", "by", "reverse");
        bool caseSensitive = Given(b[0]) && PyOps.Truthy(b[0]);
        string by = Given(b[1]) ? PyOps.Str(b[1]) : "key";
        bool reverse = Given(b[2]) && PyOps.Truthy(b[2]);
        if (by is not ("key" or "value")) throw PyError.Type("You can only sort by either \"key\" or \"value\"");
        if (v is not PyDict d) throw PyError.Type($"'{PyOps.TypeName(v)}' object has no attribute 'items'");
        var pairs = d.Items.Select(kv => (object?)new PyTuple(new[] { kv.Key, kv.Value })).ToList();
        return SortBy(pairs, item => { var t = (PyTuple)item!; var key = t.Items[by == "key" ? 0 : 1]; return caseSensitive ? key : IgnoreCase(key); }, reverse);
    }

    private static object? Sort(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("sort", 0, "reverse", "case_sensitive", "attribute");
        bool reverse = Given(b[0]) && PyOps.Truthy(b[0]);
        bool caseSensitive = Given(b[1]) && PyOps.Truthy(b[1]);
        object? attribute = Given(b[2]) ? b[2] : null;
        var getters = attribute is string s ? s.Split(',').Select(p => AttrGetter(p)).ToList() : new List<Func<object?, object?>> { AttrGetter(attribute) };
        object? Key(object? item)
        {
            var keys = getters.Select(g => caseSensitive ? g(item) : IgnoreCase(g(item))).ToArray();
            return new PyTuple(keys);
        }
        return SortBy(PyIter.ToList(v), Key, reverse);
    }

    private static List<object?> SortBy(List<object?> items, Func<object?, object?> key, bool reverse)
    {
        var comparer = Comparer<object?>.Create((x, y) => PyOps.Compare(x, y, "<"));
        // LINQ's ordering is stable in both directions, like Python's sorted(reverse=...).
        return (reverse ? items.OrderByDescending(key, comparer) : items.OrderBy(key, comparer)).ToList();
    }

    private static object? Unique(Interpreter _, object? v, CallArgs a)
    {
        var b = a.Bind("unique", 0, "case_sensitive", "attribute");
        bool caseSensitive = Given(b[0]) && PyOps.Truthy(b[0]);
        var getter = AttrGetter(Given(b[1]) ? b[1] : null);
        IEnumerable<object?> Generate()
        {
            var seen = new PyDict();
            foreach (var item in PyIter.Iterate(v))
            {
                var key = getter(item);
                if (!caseSensitive) key = IgnoreCase(key);
                if (seen.ContainsKey(key)) continue;
                seen.Set(key, true);
                yield return item;
            }
        }
        return new PyIterator(Generate(), "generator");
    }

    private static object? MinMax(object? v, CallArgs a, string which)
    {
        var b = a.Bind(which, 0, "case_sensitive", "attribute");
        bool caseSensitive = Given(b[0]) && PyOps.Truthy(b[0]);
        var getter = AttrGetter(Given(b[1]) ? b[1] : null);
        var items = PyIter.ToList(v);
        if (items.Count == 0) return Undefined.WithHint("No aggregated item, sequence was empty.");
        object? best = items[0];
        object? bestKey = caseSensitive ? getter(best) : IgnoreCase(getter(best));
        foreach (var item in items.Skip(1))
        {
            var key = caseSensitive ? getter(item) : IgnoreCase(getter(item));
            bool better = which == "max" ? PyOps.CompareOp(">", key, bestKey) : PyOps.CompareOp("<", key, bestKey);
            if (better) { best = item; bestKey = key; }
        }
        return best;
    }

    private static object? Map(Interpreter interpreter, object? v, CallArgs a)
    {
        Func<object?, object?> func;
        var attribute = a.Keywords.FirstOrDefault(k => k.Key == "attribute");
        if (a.Positional.Count == 0 && attribute.Key is not null)
        {
            var dflt = a.Keywords.FirstOrDefault(k => k.Key == "default");
            var extra = a.Keywords.FirstOrDefault(k => k.Key is not ("attribute" or "default"));
            if (extra.Key is not null) throw PyError.Type($"Unexpected keyword argument '{extra.Key}'");
            var getter = AttrGetter(attribute.Value);
            func = dflt.Key is null ? getter : item => getter(item) is Undefined ? dflt.Value : getter(item);
        }
        else
        {
            if (a.Positional.Count == 0) throw PyError.Type("map requires a filter argument");
            string name = PyOps.Str(a.Positional[0]);
            var rest = new CallArgs(a.Positional.Skip(1).ToList(), a.Keywords);
            func = item => Apply(interpreter, name, item, rest);
        }
        var source = PyOps.Truthy(v) ? PyIter.Iterate(v) : Array.Empty<object?>();
        return new PyIterator(source.Select(func), "generator");
    }

    private static object? SelectOrReject(Interpreter interpreter, object? v, CallArgs a, bool select, bool byAttribute)
    {
        int offset = 0;
        Func<object?, object?> transform = x => x;
        if (byAttribute)
        {
            if (a.Positional.Count == 0) throw PyError.Type("Missing parameter for attribute name");
            transform = AttrGetter(a.Positional[0]);
            offset = 1;
        }
        Func<object?, bool> predicate;
        if (a.Positional.Count > offset)
        {
            string test = PyOps.Str(a.Positional[offset]);
            var rest = new CallArgs(a.Positional.Skip(offset + 1).ToList(), a.Keywords);
            predicate = item => Tests.Apply(interpreter, test, item, rest);
        }
        else predicate = PyOps.Truthy;
        var source = PyOps.Truthy(v) ? PyIter.Iterate(v) : Array.Empty<object?>();
        return new PyIterator(source.Where(item => predicate(transform(item)) == select), "generator");
    }

    /// <summary>jinja's make_attrgetter: "a.b.0" looks up a, then b, then item 0, each item-first.</summary>
    private static Func<object?, object?> AttrGetter(object? attribute)
    {
        if (attribute is null) return x => x;
        var parts = attribute is string s
            ? s.Split('.').Select(p => p.Length > 0 && p.All(char.IsAsciiDigit) ? (object)long.Parse(p, System.Globalization.CultureInfo.InvariantCulture) : p).ToList()
            : new List<object> { attribute };
        return item =>
        {
            foreach (var part in parts) item = PyObjects.GetItem(item, part);
            return item;
        };
    }

    private static object? IgnoreCase(object? v) => v is string s ? PyText.Lower(s) : v;

    // jinja's title filter: split on runs of "-", whitespace and opening brackets; upper-case each piece's first character.
    private static string JinjaTitle(string s)
    {
        var pieces = TitleSplitRegex().Split(s);
        return string.Concat(pieces.Where(p => p.Length > 0).Select(p =>
        {
            var runes = PyText.Runes(p);
            return PyText.Upper(PyText.FromRune(runes[0])) + PyText.Lower(PyText.FromRunes(runes[1..]));
        }));
    }

    [GeneratedRegex(@"([-\s({\[<]+)")]
    private static partial Regex TitleSplitRegex();

    [GeneratedRegex(@"\w+")]
    private static partial Regex WordRegex();
}
