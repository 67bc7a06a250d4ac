namespace ML.Finetune.Chat.Jinja;

// Python values as the interpreter sees them:
//   None -> null, bool -> bool, int -> long, float -> double, str -> string, list -> List<object?>,
//   tuple -> PyTuple, dict -> PyDict, plus the Jinja/Python objects below. Templates run in an immutable sandbox,
//   so a list or dict is never changed after it has been built.

/// <summary>jinja2's default <c>Undefined</c>: prints as "", iterates as empty, is falsy; most other uses fail.</summary>
internal sealed class Undefined
{
    private static readonly object s_noOwner = new();
    private readonly object? _owner;
    private readonly object? _key;
    private readonly string? _hint;

    private Undefined(object? key, object? owner, string? hint)
    {
        _key = key;
        _owner = owner;
        _hint = hint;
    }

    /// <summary>A variable that is not defined.</summary>
    public static Undefined Variable(string name) => new(name, s_noOwner, null);

    /// <summary>An attribute or item that <paramref name="owner"/> does not have.</summary>
    public static Undefined Member(object? owner, object? key) => new(key, owner, null);

    /// <summary>An undefined value with an explicit message (e.g. a sandbox refusal).</summary>
    public static Undefined WithHint(string hint) => new(null, s_noOwner, hint);

    /// <summary>The message jinja2 puts in its <c>UndefinedError</c>.</summary>
    public string Message
    {
        get
        {
            if (_hint is not null) return _hint;
            if (ReferenceEquals(_owner, s_noOwner)) return $"'{_key}' is undefined";
            string owner = _owner is null ? "None" : $"{PyOps.TypeName(_owner)} object";
            return _key is string name
                ? $"'{owner}' has no attribute '{name}'"
                : $"{owner} has no element {PyOps.Repr(_key)}";
        }
    }

    public PyError Fail() => new(Message);
}

/// <summary>A Python tuple.</summary>
internal sealed class PyTuple
{
    public PyTuple(IReadOnlyList<object?> items) => Items = items;
    public IReadOnlyList<object?> Items { get; }
}

/// <summary>A Python dict: insertion-ordered, keys compared with Python equality (1 == 1.0 == True).</summary>
internal sealed class PyDict
{
    private readonly List<object?> _keys = new();
    private readonly List<object?> _values = new();
    private readonly Dictionary<object, int> _index = new(PyKeyComparer.Instance);

    public int Count => _keys.Count;
    public IReadOnlyList<object?> Keys => _keys;
    public IReadOnlyList<object?> Values => _values;

    public IEnumerable<KeyValuePair<object?, object?>> Items
    {
        get
        {
            for (int i = 0; i < _keys.Count; i++) yield return new(_keys[i], _values[i]);
        }
    }

    public void Set(object? key, object? value)
    {
        var k = PyKeyComparer.Wrap(key);
        if (_index.TryGetValue(k, out int at)) _values[at] = value;
        else
        {
            _index[k] = _keys.Count;
            _keys.Add(key);
            _values.Add(value);
        }
    }

    public bool TryGet(object? key, out object? value)
    {
        if (!PyOps.IsHashable(key)) throw PyError.Type($"unhashable type: '{PyOps.TypeName(key)}'");
        if (_index.TryGetValue(PyKeyComparer.Wrap(key), out int at))
        {
            value = _values[at];
            return true;
        }
        value = null;
        return false;
    }

    public bool ContainsKey(object? key) => TryGet(key, out _);
}

/// <summary>Hashing and equality of dict keys with Python semantics.</summary>
internal sealed class PyKeyComparer : IEqualityComparer<object>
{
    public static readonly PyKeyComparer Instance = new();
    private static readonly object s_none = new();

    public static object Wrap(object? key) => key ?? s_none;
    private static object? Unwrap(object key) => ReferenceEquals(key, s_none) ? null : key;

    public new bool Equals(object? x, object? y) => PyOps.PyEquals(Unwrap(x!), Unwrap(y!));

    public int GetHashCode(object obj)
    {
        var v = Unwrap(obj);
        switch (v)
        {
            case null: return 0x5eed;
            case bool b: return b ? 1 : 0;
            case long l: return l.GetHashCode();
            case double d: return d == Math.Floor(d) && Math.Abs(d) < 9.2e18 ? ((long)d).GetHashCode() : d.GetHashCode();
            case string s: return StringComparer.Ordinal.GetHashCode(s);
            case Markup m: return StringComparer.Ordinal.GetHashCode(m.Value);
            case PyTuple t:
                var h = new HashCode();
                foreach (var item in t.Items) h.Add(GetHashCode(Wrap(item)));
                return h.ToHashCode();
            default: return System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(v);
        }
    }
}

/// <summary>The object <c>namespace(...)</c> returns: the one value a template may change in place (<c>set ns.x = ...</c>).</summary>
internal sealed class Namespace
{
    public PyDict Attributes { get; } = new();
}

/// <summary>markupsafe's <c>Markup</c>: a string marked safe (from <c>|safe</c> or <c>|escape</c>).</summary>
internal sealed class Markup
{
    public Markup(string value) => Value = value;
    public string Value { get; }
}

/// <summary>A one-shot Python iterator (generator, reversed(...), map object ...): truthy, no len, consumed by iteration.</summary>
internal sealed class PyIterator
{
    private IEnumerator<object?>? _source;

    public PyIterator(IEnumerable<object?> source, string typeName)
    {
        _source = source.GetEnumerator();
        TypeName = typeName;
    }

    public string TypeName { get; }

    public IEnumerable<object?> Consume()
    {
        var source = _source;
        if (source is null) yield break;
        while (source.MoveNext()) yield return source.Current;
        _source = null;
    }
}

/// <summary>A Python <c>range</c> object.</summary>
internal sealed class PyRange
{
    public PyRange(long start, long stop, long step)
    {
        if (step == 0) throw PyError.Type("range() arg 3 must not be zero");
        Start = start;
        Stop = stop;
        Step = step;
    }

    public long Start { get; }
    public long Stop { get; }
    public long Step { get; }

    public long Count => Step > 0
        ? (Stop > Start ? (Stop - Start + Step - 1) / Step : 0)
        : (Start > Stop ? (Start - Stop - Step - 1) / -Step : 0);

    public IEnumerable<object?> Enumerate()
    {
        for (long i = 0, v = Start; i < Count; i++, v += Step) yield return v;
    }
}

/// <summary><c>dict.items()</c>, <c>dict.keys()</c>, <c>dict.values()</c> views.</summary>
internal sealed class PyDictView
{
    public PyDictView(PyDict dict, string kind)
    {
        Dict = dict;
        Kind = kind;
    }

    public PyDict Dict { get; }
    /// <summary>"items", "keys" or "values".</summary>
    public string Kind { get; }

    public IEnumerable<object?> Enumerate() => Kind switch
    {
        "keys" => Dict.Keys,
        "values" => Dict.Values,
        _ => Dict.Items.Select(kv => (object?)new PyTuple(new[] { kv.Key, kv.Value })),
    };
}

/// <summary>Positional and keyword arguments of a call.</summary>
internal sealed class CallArgs
{
    public static readonly CallArgs Empty = new(Array.Empty<object?>(), Array.Empty<KeyValuePair<string, object?>>());

    public CallArgs(IReadOnlyList<object?> positional, IReadOnlyList<KeyValuePair<string, object?>> keywords)
    {
        Positional = positional;
        Keywords = keywords;
    }

    public IReadOnlyList<object?> Positional { get; }
    public IReadOnlyList<KeyValuePair<string, object?>> Keywords { get; }

    /// <summary>
    /// Binds the arguments to a Python signature: <paramref name="names"/> in order, the first
    /// <paramref name="required"/> of them without a default. Missing optional parameters come back as <see cref="Missing"/>.
    /// </summary>
    public object?[] Bind(string function, int required, params string[] names)
    {
        var bound = new object?[names.Length];
        Array.Fill(bound, Missing);
        if (Positional.Count > names.Length)
            throw PyError.Type($"{function}() takes at most {names.Length} arguments ({Positional.Count} given)");
        for (int i = 0; i < Positional.Count; i++) bound[i] = Positional[i];
        foreach (var kv in Keywords)
        {
            int at = Array.IndexOf(names, kv.Key);
            if (at < 0) throw PyError.Type($"{function}() got an unexpected keyword argument '{kv.Key}'");
            if (!ReferenceEquals(bound[at], Missing)) throw PyError.Type($"{function}() got multiple values for argument '{kv.Key}'");
            bound[at] = kv.Value;
        }
        for (int i = 0; i < required; i++)
            if (ReferenceEquals(bound[i], Missing))
                throw PyError.Type($"{function}() missing required argument '{names[i]}'");
        return bound;
    }

    /// <summary>Marks a parameter the caller did not pass.</summary>
    public static readonly object Missing = new();
}

/// <summary>Anything a template can call: macros, globals, bound methods, <c>caller</c>, <c>loop.cycle</c>.</summary>
internal abstract class PyCallable
{
    public abstract string Name { get; }
    public abstract object? Call(Interpreter interpreter, CallArgs args);
}

/// <summary>A built-in function or bound method implemented in C#.</summary>
internal sealed class BuiltinFunction : PyCallable
{
    private readonly Func<Interpreter, CallArgs, object?> _body;

    public BuiltinFunction(string name, Func<Interpreter, CallArgs, object?> body)
    {
        Name = name;
        _body = body;
    }

    public override string Name { get; }
    public override object? Call(Interpreter interpreter, CallArgs args) => _body(interpreter, args);
}

/// <summary>Enumerates anything Python can iterate.</summary>
internal static class PyIter
{
    public static IEnumerable<object?> Iterate(object? value) => value switch
    {
        List<object?> l => l,
        PyTuple t => t.Items,
        string s => PyText.CodePoints(s),
        Markup m => PyText.CodePoints(m.Value),
        PyDict d => d.Keys,
        PyIterator it => it.Consume(),
        PyRange r => r.Enumerate(),
        PyDictView v => v.Enumerate(),
        Undefined => Array.Empty<object?>(),
        LoopContext => throw PyError.Unsupported("iterating over the loop object"),
        _ => throw PyError.Type($"'{PyOps.TypeName(value)}' object is not iterable"),
    };

    /// <summary>Materializes an iterable into a list (consuming iterators), like Python's <c>list(value)</c>.</summary>
    public static List<object?> ToList(object? value) => value is List<object?> l ? l : Iterate(value).ToList();

    public static bool IsIterable(object? value) =>
        value is List<object?> or PyTuple or string or Markup or PyDict or PyIterator or PyRange or PyDictView or Undefined;

    /// <summary>Python's <c>len(value)</c>.</summary>
    public static long Length(object? value) => value switch
    {
        List<object?> l => l.Count,
        PyTuple t => t.Items.Count,
        string s => PyText.Length(s),
        Markup m => PyText.Length(m.Value),
        PyDict d => d.Count,
        PyRange r => r.Count,
        PyDictView v => v.Dict.Count,
        Undefined => 0,
        Namespace => throw PyError.Type("object of type 'Namespace' has no len()"),
        _ => throw PyError.Type($"object of type '{PyOps.TypeName(value)}' has no len()"),
    };
}
