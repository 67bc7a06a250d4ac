using System.Text;

namespace ML.Finetune.Chat.Jinja;

/// <summary>Walks the syntax tree and writes the output. One instance renders one template call.</summary>
internal sealed class Interpreter
{
    private enum Flow { Normal, Break, Continue }

    private readonly IReadOnlyDictionary<string, object?> _globals;
    private StringBuilder _out = new();
    private int _captureDepth;

    public Interpreter(IReadOnlyDictionary<string, object?> globals, List<(int Start, int End)>? generationSpans)
    {
        _globals = globals;
        GenerationSpans = generationSpans;
    }

    /// <summary>When not null, every top-level <c>{% generation %}</c> block adds its output range here.</summary>
    public List<(int Start, int End)>? GenerationSpans { get; }

    public string Render(IReadOnlyList<Stmt> body, Scope scope)
    {
        Execute(body, scope);
        return _out.ToString();
    }

    /// <summary>Renders <paramref name="body"/> into a separate buffer (macro calls, set blocks, filter blocks).</summary>
    public string Capture(IReadOnlyList<Stmt> body, Scope scope)
    {
        var saved = _out;
        _out = new StringBuilder();
        _captureDepth++;
        try
        {
            Execute(body, scope);
            return _out.ToString();
        }
        finally
        {
            _out = saved;
            _captureDepth--;
        }
    }

    // ---- statements ----

    private Flow Execute(IReadOnlyList<Stmt> body, Scope scope)
    {
        foreach (var stmt in body)
        {
            var flow = ExecuteOne(stmt, scope);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    private Flow ExecuteOne(Stmt stmt, Scope scope)
    {
        switch (stmt)
        {
            case OutputStmt output:
                foreach (var part in output.Parts)
                {
                    if (part is TextPart text) _out.Append(text.Text);
                    else
                    {
                        var expr = (Expr)part;
                        var value = Evaluate(expr, scope);
                        _out.Append(Guard(expr, () => PyOps.Str(value)));
                    }
                }
                return Flow.Normal;
            case IfStmt ifStmt:
                foreach (var (test, branch) in ifStmt.Branches)
                    if (Truthy(test, scope)) return Execute(branch, scope);
                return Execute(ifStmt.Else, scope);
            case ForStmt forStmt:
                return ExecuteFor(forStmt, scope);
            case SetStmt set:
                Assign(set.Target, Evaluate(set.Value, scope), scope);
                return Flow.Normal;
            case SetBlockStmt setBlock:
                object? captured = Capture(setBlock.Body, new Scope(scope));
                if (setBlock.Filter is not null) captured = ApplyFilterChain(setBlock.Filter, captured, scope);
                Assign(setBlock.Target, captured, scope);
                return Flow.Normal;
            case MacroStmt macro:
                scope.Set(macro.Name, new Macro(macro.Name, macro.Parameters, macro.Defaults, macro.Body, scope));
                return Flow.Normal;
            case CallBlockStmt callBlock:
                ExecuteCallBlock(callBlock, scope);
                return Flow.Normal;
            case FilterBlockStmt filterBlock:
                var body = Capture(filterBlock.Body, new Scope(scope));
                _out.Append(Guard(filterBlock, () => PyOps.Str(ApplyFilterChain(filterBlock.Filter, body, scope))));
                return Flow.Normal;
            case WithStmt with:
                var inner = new Scope(scope);
                // Values are evaluated in the outer scope, then bound in the inner one.
                var values = with.Assignments.Select(a => Evaluate(a.Value, scope)).ToList();
                for (int i = 0; i < values.Count; i++) Assign(with.Assignments[i].Target, values[i], inner);
                return Execute(with.Body, inner);
            case BreakStmt:
                return Flow.Break;
            case ContinueStmt:
                return Flow.Continue;
            case GenerationStmt generation:
                ExecuteGeneration(generation, scope);
                return Flow.Normal;
            default:
                throw new JinjaNotImplementedException($"statement {stmt.GetType().Name}", stmt.Line, stmt.Column);
        }
    }

    private Flow ExecuteFor(ForStmt loop, Scope scope)
    {
        if (loop.Recursive) throw new JinjaNotImplementedException("recursive for loops", loop.Line, loop.Column);
        var iterable = Evaluate(loop.Iterable, scope);
        var items = Guard(loop.Iterable, () => PyIter.ToList(iterable));
        if (loop.Filter is not null)
        {
            items = items.Where(item =>
            {
                var test = new Scope(scope);
                Assign(loop.Target, item, test);
                return Truthy(loop.Filter, test);
            }).ToList();
        }
        if (items.Count == 0)
        {
            Execute(loop.Else, new Scope(scope));
            return Flow.Normal;
        }
        var context = new LoopContext(items);
        for (int i = 0; i < items.Count; i++)
        {
            var iteration = new Scope(scope);
            Assign(loop.Target, items[i], iteration);
            context.Index0 = i;
            iteration.Set("loop", context);
            if (Execute(loop.Body, iteration) == Flow.Break) break;
        }
        return Flow.Normal;
    }

    private void ExecuteCallBlock(CallBlockStmt callBlock, Scope scope)
    {
        var target = Evaluate(callBlock.Call.Target, scope);
        var args = EvaluateArgs(callBlock.Call.Args, scope);
        var caller = new Macro("caller", callBlock.Parameters, callBlock.Defaults, callBlock.Body, scope);
        object? result = target switch
        {
            Macro macro => Guard(callBlock, () => macro.Invoke(this, args, caller)),
            PyCallable other => Guard(callBlock, () => other.Call(this, new CallArgs(args.Positional, args.Keywords.Append(new("caller", caller)).ToList()))),
            Undefined u => throw u.Fail().WithPosition(callBlock.Line, callBlock.Column),
            _ => throw new JinjaRuntimeException($"'{PyOps.TypeName(target)}' object is not callable", callBlock.Line, callBlock.Column),
        };
        _out.Append(Guard(callBlock, () => PyOps.Str(result)));
    }

    private void ExecuteGeneration(GenerationStmt generation, Scope scope)
    {
        // transformers records the block at the length of the text yielded so far, which is its position only
        // when the block is rendered straight into the output (not inside a macro, call, filter or set block).
        if (_captureDepth > 0)
            throw new JinjaNotImplementedException("a generation block inside a macro, call, filter or set block", generation.Line, generation.Column);
        int start = _out.Length;
        Execute(generation.Body, new Scope(scope));
        GenerationSpans?.Add((start, _out.Length));
    }

    private void Assign(Expr target, object? value, Scope scope)
    {
        switch (target)
        {
            case NameExpr name:
                scope.Set(name.Name, value);
                return;
            case TupleExpr tuple:
                var items = Guard(target, () => PyIter.ToList(value));
                if (items.Count != tuple.Items.Count)
                    throw new JinjaRuntimeException(items.Count > tuple.Items.Count
                        ? $"too many values to unpack (expected {tuple.Items.Count})"
                        : $"not enough values to unpack (expected {tuple.Items.Count}, got {items.Count})", target.Line, target.Column);
                for (int i = 0; i < items.Count; i++) Assign(tuple.Items[i], items[i], scope);
                return;
            case NsRefExpr nsRef:
                if (!scope.TryGet(nsRef.Name, out var ns) || ns is not Namespace space)
                    throw new JinjaRuntimeException("cannot assign attribute on non-namespace object", target.Line, target.Column);
                space.Attributes.Set(nsRef.Attribute, value);
                return;
            default:
                throw new JinjaSyntaxException("can't assign to this expression", target.Line, target.Column);
        }
    }

    // ---- expressions ----

    private bool Truthy(Expr expr, Scope scope) => PyOps.Truthy(Evaluate(expr, scope));

    /// <summary>Runs a value operation, giving any Python-level error the position of <paramref name="at"/>.</summary>
    public T Guard<T>(Node at, Func<T> operation)
    {
        try { return operation(); }
        catch (PyError e) { throw e.WithPosition(at.Line, at.Column); }
    }

    public object? Evaluate(Expr expr, Scope scope)
    {
        try { return EvaluateCore(expr, scope); }
        catch (PyError e) { throw e.WithPosition(expr.Line, expr.Column); }
    }

    private object? EvaluateCore(Expr expr, Scope scope)
    {
        switch (expr)
        {
            case ConstExpr c: return c.Value;
            case NameExpr n: return Lookup(n.Name, scope);
            case TupleExpr t: return new PyTuple(t.Items.Select(i => Evaluate(i, scope)).ToArray());
            case ListExpr l: return l.Items.Select(i => Evaluate(i, scope)).ToList();
            case DictExpr d:
                var dict = new PyDict();
                foreach (var (k, v) in d.Pairs) dict.Set(Evaluate(k, scope), Evaluate(v, scope));
                return dict;
            case GetAttrExpr g: return PyObjects.GetAttr(Evaluate(g.Target, scope), g.Attribute);
            case GetItemExpr g:
                var target = Evaluate(g.Target, scope);
                if (g.Key is SliceExpr s)
                    return PyObjects.GetSlice(target, EvaluateOptional(s.Start, scope), EvaluateOptional(s.Stop, scope), EvaluateOptional(s.Step, scope));
                return PyObjects.GetItem(target, Evaluate(g.Key, scope));
            case SliceExpr: throw PyError.Unsupported("a slice outside a subscript");
            case CallExpr call: return Call(Evaluate(call.Target, scope), EvaluateArgs(call.Args, scope));
            case FilterExpr f: return ApplyFilterChain(f, null, scope);
            case TestExpr t: return Tests.Apply(this, t.Name, Evaluate(t.Target, scope), EvaluateArgs(t.Args, scope));
            case CondExpr c:
                if (Truthy(c.Test, scope)) return Evaluate(c.Then, scope);
                return c.Otherwise is null
                    ? Undefined.WithHint($"the inline if-expression on line {c.Line} evaluated to false and no else section was defined.")
                    : Evaluate(c.Otherwise, scope);
            case AndExpr a:
                var left = Evaluate(a.Left, scope);
                return PyOps.Truthy(left) ? Evaluate(a.Right, scope) : left;
            case OrExpr o:
                var first = Evaluate(o.Left, scope);
                return PyOps.Truthy(first) ? first : Evaluate(o.Right, scope);
            case NotExpr n: return !Truthy(n.Operand, scope);
            case UnaryExpr u:
                var operand = Evaluate(u.Operand, scope);
                return u.Op == "-" ? PyOps.Negate(operand) : PyOps.Plus(operand);
            case BinaryExpr b: return PyOps.Binary(b.Op, Evaluate(b.Left, scope), Evaluate(b.Right, scope));
            case ConcatExpr c: return string.Concat(c.Parts.Select(p => PyOps.Str(Evaluate(p, scope))));
            case CompareExpr c:
                var current = Evaluate(c.First, scope);
                foreach (var (op, operandExpr) in c.Rest)
                {
                    var next = Evaluate(operandExpr, scope);
                    bool ok = op switch
                    {
                        "in" => PyOps.Contains(next, current),
                        "notin" => !PyOps.Contains(next, current),
                        _ => PyOps.CompareOp(op, current, next),
                    };
                    if (!ok) return false;
                    current = next;
                }
                return true;
            case NsRefExpr ns: return PyObjects.GetAttr(Lookup(ns.Name, scope), ns.Attribute);
            default: throw PyError.Unsupported($"expression {expr.GetType().Name}");
        }
    }

    private object? EvaluateOptional(Expr? expr, Scope scope) => expr is null ? null : Evaluate(expr, scope);

    private object? Lookup(string name, Scope scope)
    {
        if (scope.TryGet(name, out var value)) return value;
        if (_globals.TryGetValue(name, out value)) return value;
        return Undefined.Variable(name);
    }

    public CallArgs EvaluateArgs(Arguments args, Scope scope)
    {
        if (args.Positional.Count == 0 && args.Keywords.Count == 0 && args.DynamicArgs is null && args.DynamicKwargs is null) return CallArgs.Empty;
        var positional = args.Positional.Select(p => Evaluate(p, scope)).ToList();
        var keywords = args.Keywords.Select(k => new KeyValuePair<string, object?>(k.Name, Evaluate(k.Value, scope))).ToList();
        if (args.DynamicArgs is not null)
            positional.AddRange(Guard(args.DynamicArgs, () => PyIter.ToList(Evaluate(args.DynamicArgs, scope))));
        if (args.DynamicKwargs is not null)
        {
            var extra = Evaluate(args.DynamicKwargs, scope);
            if (extra is not PyDict d) throw new JinjaRuntimeException("argument after ** must be a mapping", args.DynamicKwargs.Line, args.DynamicKwargs.Column);
            foreach (var kv in d.Items)
                keywords.Add(new(kv.Key as string ?? throw new JinjaRuntimeException("keywords must be strings", args.DynamicKwargs.Line, args.DynamicKwargs.Column), kv.Value));
        }
        return new CallArgs(positional, keywords);
    }

    public object? Call(object? target, CallArgs args) => target switch
    {
        PyCallable callable => callable.Call(this, args),
        Undefined u => throw u.Fail(),
        _ => throw PyError.Type($"'{PyOps.TypeName(target)}' object is not callable"),
    };

    // A filter chain a|f|g is nested FilterExpr nodes; `input` is the value of the innermost target (filter blocks).
    private object? ApplyFilterChain(FilterExpr filter, object? input, Scope scope)
    {
        object? value = filter.Target switch
        {
            null => input,
            FilterExpr inner => ApplyFilterChain(inner, input, scope),
            var target => Evaluate(target, scope),
        };
        var args = EvaluateArgs(filter.Args, scope);
        try { return Filters.Apply(this, filter.Name, value, args); }
        catch (PyError e) { throw e.WithPosition(filter.Line, filter.Column); }
    }
}
