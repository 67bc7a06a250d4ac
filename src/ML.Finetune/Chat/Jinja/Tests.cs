namespace ML.Finetune.Chat.Jinja;

/// <summary>Jinja's tests (<c>x is defined</c>, <c>x is string</c>, ...), with jinja2's semantics.</summary>
internal static class Tests
{
    private static readonly Dictionary<string, Func<object?, CallArgs, bool>> s_tests = new(StringComparer.Ordinal)
    {
        ["defined"] = (v, a) => NoArgs(a, "defined") && v is not Undefined,
        ["undefined"] = (v, a) => NoArgs(a, "undefined") && v is Undefined,
        ["none"] = (v, a) => NoArgs(a, "none") && v is null,
        ["boolean"] = (v, a) => NoArgs(a, "boolean") && v is bool,
        ["true"] = (v, a) => NoArgs(a, "true") && v is true,
        ["false"] = (v, a) => NoArgs(a, "false") && v is false,
        ["integer"] = (v, a) => NoArgs(a, "integer") && v is long,
        ["float"] = (v, a) => NoArgs(a, "float") && v is double,
        ["number"] = (v, a) => NoArgs(a, "number") && v is long or double or bool,
        ["string"] = (v, a) => NoArgs(a, "string") && v is string or Markup,
        ["mapping"] = (v, a) => NoArgs(a, "mapping") && v is PyDict,
        // jinja: len(value) and value.__getitem__ both work (Undefined has both).
        ["sequence"] = (v, a) => NoArgs(a, "sequence") && v is List<object?> or PyTuple or string or Markup or PyDict or PyRange or Undefined,
        ["iterable"] = (v, a) => NoArgs(a, "iterable") && PyIter.IsIterable(v),
        // Undefined defines __call__ (it fails when called), so Python's callable() is true for it.
        ["callable"] = (v, a) => NoArgs(a, "callable") && v is PyCallable or Undefined,
        ["escaped"] = (v, a) => NoArgs(a, "escaped") && v is Markup,
        ["lower"] = (v, a) => NoArgs(a, "lower") && IsCase(PyOps.Str(v), lower: true),
        ["upper"] = (v, a) => NoArgs(a, "upper") && IsCase(PyOps.Str(v), lower: false),
        ["odd"] = (v, a) => NoArgs(a, "odd") && PyOps.PyEquals(PyOps.Binary("%", v, 2L), 1L),
        ["even"] = (v, a) => NoArgs(a, "even") && PyOps.PyEquals(PyOps.Binary("%", v, 2L), 0L),
        ["divisibleby"] = (v, a) => PyOps.PyEquals(PyOps.Binary("%", v, a.Bind("divisibleby", 1, "num")[0]), 0L),
        ["sameas"] = (v, a) => SameAs(v, a.Bind("sameas", 1, "other")[0]),
        ["in"] = (v, a) => PyOps.Contains(a.Bind("in", 1, "seq")[0], v),
        ["eq"] = (v, a) => PyOps.CompareOp("==", v, One(a, "eq")),
        ["ne"] = (v, a) => PyOps.CompareOp("!=", v, One(a, "ne")),
        ["lt"] = (v, a) => PyOps.CompareOp("<", v, One(a, "lt")),
        ["le"] = (v, a) => PyOps.CompareOp("<=", v, One(a, "le")),
        ["gt"] = (v, a) => PyOps.CompareOp(">", v, One(a, "gt")),
        ["ge"] = (v, a) => PyOps.CompareOp(">=", v, One(a, "ge")),
        ["filter"] = (v, a) => NoArgs(a, "filter") && v is string f && Filters.Exists(f),
        ["test"] = (v, a) => NoArgs(a, "test") && v is string t && Exists(t),
    };

    private static readonly Dictionary<string, string> s_aliases = new(StringComparer.Ordinal)
    {
        ["=="] = "eq", ["equalto"] = "eq", ["!="] = "ne", ["<"] = "lt", ["lessthan"] = "lt", ["<="] = "le",
        [">"] = "gt", ["greaterthan"] = "gt", [">="] = "ge",
    };

    public static bool Exists(string name) => s_tests.ContainsKey(name) || s_aliases.ContainsKey(name);

    public static bool Apply(Interpreter interpreter, string name, object? value, CallArgs args)
    {
        if (s_aliases.TryGetValue(name, out var canonical)) name = canonical;
        if (!s_tests.TryGetValue(name, out var test)) throw PyError.Type($"No test named '{name}' found.");
        return test(value, args);
    }

    private static bool NoArgs(CallArgs args, string name)
    {
        args.Bind(name, 0);
        return true;
    }

    private static object? One(CallArgs args, string name) => args.Bind(name, 1, "other")[0];

    private static bool IsCase(string s, bool lower)
    {
        bool anyCased = false;
        foreach (int cp in PyText.Runes(s))
        {
            if (!PyText.IsCased(cp)) continue;
            anyCased = true;
            string one = PyText.FromRune(cp);
            if ((lower ? PyText.Lower(one) : PyText.Upper(one)) != one) return false;
        }
        return anyCased;
    }

    // Python's `is`: identity. None, booleans and small ints are singletons in CPython.
    private static bool SameAs(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (bool x, bool y) => x == y,
        (long x, long y) => x == y && x is >= -5 and <= 256,
        _ => ReferenceEquals(a, b),
    };
}
