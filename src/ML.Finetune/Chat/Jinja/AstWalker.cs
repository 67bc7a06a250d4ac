namespace ML.Finetune.Chat.Jinja;

/// <summary>Visits every node of a (sub)tree.</summary>
internal static class AstWalker
{
    /// <summary>Names read anywhere in <paramref name="body"/> (nested macros included, as jinja's analysis does).</summary>
    public static HashSet<string> ReferencedNames(IEnumerable<Node> body)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in body)
            foreach (var n in Descendants(node))
                if (n is NameExpr name) names.Add(name.Name);
        return names;
    }

    /// <summary>True when any node of the tree satisfies <paramref name="predicate"/>.</summary>
    public static bool Any(IEnumerable<Node> body, Func<Node, bool> predicate) => body.Any(n => Descendants(n).Any(predicate));

    public static IEnumerable<Node> Descendants(Node node)
    {
        yield return node;
        foreach (var child in Children(node))
            if (child is not null)
                foreach (var d in Descendants(child)) yield return d;
    }

    private static IEnumerable<Node?> Children(Node node)
    {
        switch (node)
        {
            case TupleExpr t: return t.Items;
            case ListExpr l: return l.Items;
            case DictExpr d: return d.Pairs.SelectMany(p => new Node[] { p.Key, p.Value });
            case GetAttrExpr g: return new[] { g.Target };
            case GetItemExpr g: return new[] { g.Target, g.Key };
            case SliceExpr s: return new[] { s.Start, s.Stop, s.Step };
            case CallExpr c: return Prepend(c.Target, c.Args);
            case FilterExpr f: return Prepend(f.Target, f.Args);
            case TestExpr t: return Prepend(t.Target, t.Args);
            case CondExpr c: return new[] { c.Test, c.Then, c.Otherwise };
            case BinaryExpr b: return new[] { b.Left, b.Right };
            case AndExpr a: return new[] { a.Left, a.Right };
            case OrExpr o: return new[] { o.Left, o.Right };
            case NotExpr n: return new[] { n.Operand };
            case UnaryExpr u: return new[] { u.Operand };
            case ConcatExpr c: return c.Parts;
            case CompareExpr c: return new Node[] { c.First }.Concat(c.Rest.Select(r => r.Operand));
            case OutputStmt o: return o.Parts;
            case IfStmt i: return i.Branches.SelectMany(b => new Node[] { b.Test }.Concat(b.Body)).Concat(i.Else);
            case ForStmt f: return new Node?[] { f.Target, f.Iterable, f.Filter }.Concat(f.Body).Concat(f.Else);
            case SetStmt s: return new[] { s.Target, s.Value };
            case SetBlockStmt s: return new Node?[] { s.Target, s.Filter }.Concat(s.Body);
            case MacroStmt m: return m.Defaults.Concat<Node>(m.Body);
            case CallBlockStmt c: return new Node[] { c.Call }.Concat(c.Defaults).Concat(c.Body);
            case FilterBlockStmt f: return new Node[] { f.Filter }.Concat(f.Body);
            case WithStmt w: return w.Assignments.SelectMany(a => new Node[] { a.Target, a.Value }).Concat(w.Body);
            case GenerationStmt g: return g.Body;
            default: return Array.Empty<Node>();
        }
    }

    private static IEnumerable<Node?> Prepend(Node? first, Arguments args) =>
        new[] { first }.Concat(args.Positional).Concat(args.Keywords.Select(k => k.Value)).Concat(new[] { args.DynamicArgs, args.DynamicKwargs });
}
