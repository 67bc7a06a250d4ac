namespace ML.Finetune.Chat.Jinja;

/// <summary>
/// Variables visible to a piece of the template. Jinja gives each loop iteration, macro call, caller body and
/// <c>with</c> block its own scope: assignments there never leak out (hence the <c>namespace()</c> idiom), and an
/// iteration does not see what the previous iteration assigned. <c>if</c> blocks share the enclosing scope.
/// </summary>
internal sealed class Scope
{
    private readonly Dictionary<string, object?> _vars = new(StringComparer.Ordinal);

    public Scope(Scope? parent) => Parent = parent;

    public Scope? Parent { get; }

    public bool TryGet(string name, out object? value)
    {
        for (var s = this; s is not null; s = s.Parent)
            if (s._vars.TryGetValue(name, out value)) return true;
        value = null;
        return false;
    }

    public void Set(string name, object? value) => _vars[name] = value;
}

/// <summary>The <c>loop</c> variable of a for loop.</summary>
internal sealed class LoopContext
{
    private readonly IReadOnlyList<object?> _items;
    private object? _lastChanged = s_unset;
    private static readonly object s_unset = new();

    public LoopContext(IReadOnlyList<object?> items) => _items = items;

    public int Index0 { get; set; }

    public object? GetAttribute(string name) => name switch
    {
        "index0" => (long)Index0,
        "index" => (long)Index0 + 1,
        "revindex0" => (long)(_items.Count - Index0 - 1),
        "revindex" => (long)(_items.Count - Index0),
        "first" => Index0 == 0,
        "last" => Index0 == _items.Count - 1,
        "length" => (long)_items.Count,
        "depth" => 1L,
        "depth0" => 0L,
        "previtem" => Index0 > 0 ? _items[Index0 - 1] : Undefined.WithHint("there is no previous item"),
        "nextitem" => Index0 < _items.Count - 1 ? _items[Index0 + 1] : Undefined.WithHint("there is no next item"),
        "cycle" => new BuiltinFunction("cycle", (_, args) =>
        {
            if (args.Positional.Count == 0) throw PyError.Type("no items for cycling given");
            return args.Positional[Index0 % args.Positional.Count];
        }),
        "changed" => new BuiltinFunction("changed", (_, args) =>
        {
            var value = new PyTuple(args.Positional.ToArray());
            if (!ReferenceEquals(_lastChanged, s_unset) && PyOps.PyEquals(_lastChanged, value)) return false;
            _lastChanged = value;
            return true;
        }),
        _ => Undefined.Member(this, name),
    };
}

/// <summary>A macro defined with <c>{% macro %}</c>, or the body of a <c>{% call %}</c> block (<c>caller</c>).</summary>
internal sealed class Macro : PyCallable
{
    private readonly IReadOnlyList<string> _parameters;
    private readonly IReadOnlyList<Expr> _defaults;
    private readonly IReadOnlyList<Stmt> _body;
    private readonly Scope _closure;
    private readonly bool _catchVarargs, _catchKwargs, _acceptsCaller;

    public Macro(string name, IReadOnlyList<string> parameters, IReadOnlyList<Expr> defaults, IReadOnlyList<Stmt> body, Scope closure)
    {
        Name = name;
        _parameters = parameters;
        _defaults = defaults;
        _body = body;
        _closure = closure;
        // Like jinja, a macro takes extra arguments only if its body refers to varargs / kwargs / caller.
        var names = AstWalker.ReferencedNames(body);
        _catchVarargs = names.Contains("varargs");
        _catchKwargs = names.Contains("kwargs");
        _acceptsCaller = names.Contains("caller");
    }

    public override string Name { get; }

    public override object? Call(Interpreter interpreter, CallArgs args) => Invoke(interpreter, args, caller: null);

    public string Invoke(Interpreter interpreter, CallArgs args, Macro? caller)
    {
        var scope = new Scope(_closure);
        var extraKwargs = new PyDict();
        var bound = new bool[_parameters.Count];
        for (int i = 0; i < args.Positional.Count && i < _parameters.Count; i++)
        {
            scope.Set(_parameters[i], args.Positional[i]);
            bound[i] = true;
        }
        var varargs = args.Positional.Skip(_parameters.Count).ToList();
        if (varargs.Count > 0 && !_catchVarargs)
            throw PyError.Type($"macro '{Name}' takes not more than {_parameters.Count} argument(s)");
        foreach (var kv in args.Keywords)
        {
            int at = IndexOf(kv.Key);
            if (at >= 0)
            {
                if (bound[at]) throw PyError.Type($"macro '{Name}' got multiple values for argument '{kv.Key}'");
                scope.Set(kv.Key, kv.Value);
                bound[at] = true;
            }
            else if (kv.Key == "caller" && _acceptsCaller) caller = kv.Value as Macro;
            else if (_catchKwargs) extraKwargs.Set(kv.Key, kv.Value);
            else throw PyError.Type($"macro '{Name}' takes no keyword argument '{kv.Key}'");
        }
        int firstDefault = _parameters.Count - _defaults.Count;
        for (int i = 0; i < _parameters.Count; i++)
        {
            if (bound[i]) continue;
            // Defaults are evaluated at call time, in the macro's scope (they may use earlier parameters).
            scope.Set(_parameters[i], i >= firstDefault
                ? interpreter.Evaluate(_defaults[i - firstDefault], scope)
                : Undefined.WithHint($"parameter '{_parameters[i]}' was not provided"));
        }
        if (_catchVarargs) scope.Set("varargs", new PyTuple(varargs));
        if (_catchKwargs) scope.Set("kwargs", extraKwargs);
        if (_acceptsCaller) scope.Set("caller", caller is null ? Undefined.WithHint("No caller defined") : caller);
        return interpreter.Capture(_body, scope);
    }

    private int IndexOf(string name)
    {
        for (int i = 0; i < _parameters.Count; i++)
            if (_parameters[i] == name) return i;
        return -1;
    }
}
