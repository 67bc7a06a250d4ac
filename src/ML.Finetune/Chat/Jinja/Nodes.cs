namespace ML.Finetune.Chat.Jinja;

// The template's syntax tree, mirroring jinja2.nodes. Every node keeps its 1-based line and column for error messages.

internal abstract record Node(int Line, int Column);

// ---- expressions ----

internal abstract record Expr(int Line, int Column) : Node(Line, Column);

internal sealed record ConstExpr(object? Value, int Line, int Column) : Expr(Line, Column);

internal sealed record NameExpr(string Name, int Line, int Column) : Expr(Line, Column);

/// <summary><c>ns.attr</c> as an assignment target.</summary>
internal sealed record NsRefExpr(string Name, string Attribute, int Line, int Column) : Expr(Line, Column);

internal sealed record TupleExpr(IReadOnlyList<Expr> Items, int Line, int Column) : Expr(Line, Column);

internal sealed record ListExpr(IReadOnlyList<Expr> Items, int Line, int Column) : Expr(Line, Column);

internal sealed record DictExpr(IReadOnlyList<(Expr Key, Expr Value)> Pairs, int Line, int Column) : Expr(Line, Column);

internal sealed record GetAttrExpr(Expr Target, string Attribute, int Line, int Column) : Expr(Line, Column);

internal sealed record GetItemExpr(Expr Target, Expr Key, int Line, int Column) : Expr(Line, Column);

internal sealed record SliceExpr(Expr? Start, Expr? Stop, Expr? Step, int Line, int Column) : Expr(Line, Column);

internal sealed record Arguments(IReadOnlyList<Expr> Positional, IReadOnlyList<(string Name, Expr Value)> Keywords, Expr? DynamicArgs, Expr? DynamicKwargs)
{
    public static readonly Arguments None = new(Array.Empty<Expr>(), Array.Empty<(string, Expr)>(), null, null);
}

internal sealed record CallExpr(Expr Target, Arguments Args, int Line, int Column) : Expr(Line, Column);

/// <summary><c>target | name(args)</c>; <see cref="Target"/> is null for the filter of a <c>{% filter %}</c> block.</summary>
internal sealed record FilterExpr(Expr? Target, string Name, Arguments Args, int Line, int Column) : Expr(Line, Column);

internal sealed record TestExpr(Expr Target, string Name, Arguments Args, int Line, int Column) : Expr(Line, Column);

/// <summary><c>then if test else otherwise</c>; without <c>else</c> the false branch is undefined.</summary>
internal sealed record CondExpr(Expr Test, Expr Then, Expr? Otherwise, int Line, int Column) : Expr(Line, Column);

/// <summary>Arithmetic: + - * / // % **.</summary>
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right, int Line, int Column) : Expr(Line, Column);

internal sealed record AndExpr(Expr Left, Expr Right, int Line, int Column) : Expr(Line, Column);

internal sealed record OrExpr(Expr Left, Expr Right, int Line, int Column) : Expr(Line, Column);

internal sealed record NotExpr(Expr Operand, int Line, int Column) : Expr(Line, Column);

/// <summary>Unary - or +.</summary>
internal sealed record UnaryExpr(string Op, Expr Operand, int Line, int Column) : Expr(Line, Column);

/// <summary><c>a ~ b ~ c</c>: string concatenation.</summary>
internal sealed record ConcatExpr(IReadOnlyList<Expr> Parts, int Line, int Column) : Expr(Line, Column);

/// <summary>A comparison chain <c>a &lt; b == c</c>; operators are == != &lt; &lt;= &gt; &gt;= in notin.</summary>
internal sealed record CompareExpr(Expr First, IReadOnlyList<(string Op, Expr Operand)> Rest, int Line, int Column) : Expr(Line, Column);

// ---- statements ----

internal abstract record Stmt(int Line, int Column) : Node(Line, Column);

/// <summary>Template text and <c>{{ expression }}</c> output, in order. Parts are <see cref="TextPart"/> or expressions.</summary>
internal sealed record OutputStmt(IReadOnlyList<Node> Parts, int Line, int Column) : Stmt(Line, Column);

internal sealed record TextPart(string Text, int Line, int Column) : Node(Line, Column);

internal sealed record IfStmt(IReadOnlyList<(Expr Test, IReadOnlyList<Stmt> Body)> Branches, IReadOnlyList<Stmt> Else, int Line, int Column) : Stmt(Line, Column);

internal sealed record ForStmt(Expr Target, Expr Iterable, Expr? Filter, IReadOnlyList<Stmt> Body, IReadOnlyList<Stmt> Else, bool Recursive, int Line, int Column) : Stmt(Line, Column);

internal sealed record SetStmt(Expr Target, Expr Value, int Line, int Column) : Stmt(Line, Column);

/// <summary><c>{% set x | filter %}body{% endset %}</c>.</summary>
internal sealed record SetBlockStmt(Expr Target, FilterExpr? Filter, IReadOnlyList<Stmt> Body, int Line, int Column) : Stmt(Line, Column);

internal sealed record MacroStmt(string Name, IReadOnlyList<string> Parameters, IReadOnlyList<Expr> Defaults, IReadOnlyList<Stmt> Body, int Line, int Column) : Stmt(Line, Column);

/// <summary><c>{% call(params) macro(args) %}body{% endcall %}</c>: the body is passed as <c>caller</c>.</summary>
internal sealed record CallBlockStmt(CallExpr Call, IReadOnlyList<string> Parameters, IReadOnlyList<Expr> Defaults, IReadOnlyList<Stmt> Body, int Line, int Column) : Stmt(Line, Column);

internal sealed record FilterBlockStmt(FilterExpr Filter, IReadOnlyList<Stmt> Body, int Line, int Column) : Stmt(Line, Column);

internal sealed record WithStmt(IReadOnlyList<(Expr Target, Expr Value)> Assignments, IReadOnlyList<Stmt> Body, int Line, int Column) : Stmt(Line, Column);

internal sealed record BreakStmt(int Line, int Column) : Stmt(Line, Column);

internal sealed record ContinueStmt(int Line, int Column) : Stmt(Line, Column);

/// <summary>transformers' <c>{% generation %}...{% endgeneration %}</c>: marks assistant text for the training mask.</summary>
internal sealed record GenerationStmt(IReadOnlyList<Stmt> Body, int Line, int Column) : Stmt(Line, Column);
