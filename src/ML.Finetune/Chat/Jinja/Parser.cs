namespace ML.Finetune.Chat.Jinja;

/// <summary>
/// Builds the syntax tree from tokens, following jinja2's parser rule for rule (operator precedence, tuples,
/// filters and tests, conditional expressions, statement bodies), with the statements transformers enables:
/// the built-ins, <c>break</c>/<c>continue</c> (loopcontrols) and <c>generation</c>.
/// </summary>
internal sealed class Parser
{
    private static readonly HashSet<string> s_compareOps = new() { "==", "!=", "<", "<=", ">", ">=" };
    private static readonly HashSet<string> s_unsupportedStatements = new() { "block", "extends", "include", "import", "from", "autoescape" };

    private readonly List<Token> _tokens;
    private int _at;
    private readonly Stack<string[]> _endTokens = new();
    private int _loopDepth;

    // jinja checks filter and test names when it compiles, except inside if statements and conditional expressions
    // (its "soft" frames), where an unknown name fails only if that code runs. Loops, macros, call/filter/with blocks
    // and set blocks open ordinary frames again.
    private bool _soft;
    private readonly List<(Node Node, string Message, bool Soft)> _unknownNames = new();
    private readonly HashSet<Node> _softened = new(ReferenceEqualityComparer.Instance);

    private Parser(List<Token> tokens) => _tokens = tokens;

    public static IReadOnlyList<Stmt> Parse(string source)
    {
        var parser = new Parser(Lexer.Tokenize(source));
        var body = parser.Subparse(null);
        if (parser.Current.Kind != TokenKind.Eof) throw parser.Fail($"unexpected '{parser.Current.Describe()}'", parser.Current);
        foreach (var (node, message, soft) in parser._unknownNames)
            if (!soft && !parser._softened.Contains(node)) throw new JinjaSyntaxException(message, node.Line, node.Column);
        return body;
    }

    private Token Current => _tokens[_at];
    private Token Peek => _tokens[Math.Min(_at + 1, _tokens.Count - 1)];

    private Token Next()
    {
        var t = _tokens[_at];
        if (_at < _tokens.Count - 1) _at++;
        return t;
    }

    private JinjaSyntaxException Fail(string message, Token at) => new(message, at.Line, at.Column);

    private Token Expect(TokenKind kind, string? text = null)
    {
        var t = Current;
        if (t.Kind != kind || (text is not null && t.Text != text))
        {
            string wanted = text ?? kind switch
            {
                TokenKind.Name => "name",
                TokenKind.BlockEnd => "end of statement block",
                TokenKind.VariableEnd => "end of print statement",
                _ => kind.ToString(),
            };
            if (t.Kind == TokenKind.Eof) throw Fail($"unexpected end of template, expected '{wanted}'.", t);
            throw Fail($"expected token '{wanted}', got '{t.Describe()}'", t);
        }
        return Next();
    }

    private bool SkipName(string name)
    {
        if (!Current.IsName(name)) return false;
        Next();
        return true;
    }

    private bool SkipOp(string op)
    {
        if (!Current.IsOp(op)) return false;
        Next();
        return true;
    }

    private T InFrame<T>(bool soft, Func<T> parse)
    {
        bool saved = _soft;
        _soft = soft;
        try { return parse(); }
        finally { _soft = saved; }
    }

    // ---- statements ----

    private List<Stmt> Subparse(string[]? endTokens)
    {
        var body = new List<Stmt>();
        var data = new List<Node>();
        void Flush()
        {
            if (data.Count == 0) return;
            body.Add(new OutputStmt(data.ToArray(), data[0].Line, data[0].Column));
            data.Clear();
        }
        if (endTokens is not null) _endTokens.Push(endTokens);
        try
        {
            while (Current.Kind != TokenKind.Eof)
            {
                var t = Current;
                switch (t.Kind)
                {
                    case TokenKind.Data:
                        data.Add(new TextPart(t.Text, t.Line, t.Column));
                        Next();
                        break;
                    case TokenKind.VariableBegin:
                        Next();
                        data.Add(ParseTuple(withCondExpr: true));
                        Expect(TokenKind.VariableEnd);
                        break;
                    case TokenKind.BlockBegin:
                        Flush();
                        Next();
                        if (endTokens is not null && Current.Kind == TokenKind.Name && endTokens.Contains(Current.Text)) return body;
                        body.Add(ParseStatement());
                        Expect(TokenKind.BlockEnd);
                        break;
                    default:
                        throw Fail($"unexpected '{t.Describe()}'", t);
                }
            }
            Flush();
            return body;
        }
        finally
        {
            if (endTokens is not null) _endTokens.Pop();
        }
    }

    private List<Stmt> ParseStatements(string[] endTokens, bool dropNeedle)
    {
        SkipOp(":");
        Expect(TokenKind.BlockEnd);
        var body = Subparse(endTokens);
        if (Current.Kind == TokenKind.Eof)
            throw Fail($"Unexpected end of template. Jinja was looking for the following tags: {string.Join(" or ", endTokens.Select(e => $"'{e}'"))}.", Current);
        if (dropNeedle) Next();
        return body;
    }

    private Stmt ParseStatement()
    {
        var t = Current;
        if (t.Kind != TokenKind.Name) throw Fail("tag name expected", t);
        switch (t.Text)
        {
            case "for": return ParseFor();
            case "if": return ParseIf();
            case "set": return ParseSet();
            case "macro": return ParseMacro();
            case "call": return ParseCallBlock();
            case "filter": return ParseFilterBlock();
            case "with": return ParseWith();
            case "print":
                Next();
                var expr = ParseTuple(withCondExpr: true);
                return new OutputStmt(new Node[] { expr }, t.Line, t.Column);
            case "generation":
                Next();
                int savedLoops = _loopDepth;
                _loopDepth = 0;
                try { return new GenerationStmt(InFrame(false, () => ParseStatements(new[] { "endgeneration" }, dropNeedle: true)), t.Line, t.Column); }
                finally { _loopDepth = savedLoops; }
            case "break":
            case "continue":
                Next();
                if (_loopDepth == 0) throw Fail($"'{t.Text}' outside of a loop", t);
                return t.Text == "break" ? new BreakStmt(t.Line, t.Column) : new ContinueStmt(t.Line, t.Column);
        }
        if (s_unsupportedStatements.Contains(t.Text)) throw new JinjaNotImplementedException($"statement '{t.Text}'", t.Line, t.Column);
        string message = $"Encountered unknown tag '{t.Text}'.";
        if (_endTokens.Count > 0)
            message += $" Jinja was looking for the following tags: {string.Join(" or ", _endTokens.Peek().Select(e => $"'{e}'"))}.";
        throw Fail(message, t);
    }

    private ForStmt ParseFor()
    {
        var t = Expect(TokenKind.Name, "for");
        var target = ParseAssignTarget(extraEnd: "in");
        Expect(TokenKind.Name, "in");
        var iterable = ParseTuple(withCondExpr: false, extraEnd: "recursive");
        Expr? filter = SkipName("if") ? InFrame(false, () => ParseExpression()) : null;
        bool recursive = SkipName("recursive");
        _loopDepth++;
        List<Stmt> body;
        try { body = InFrame(false, () => ParseStatements(new[] { "endfor", "else" }, dropNeedle: false)); }
        finally { _loopDepth--; }
        // break/continue in the else branch refer to an outer loop, if any.
        var elseBody = Next().Text == "endfor" ? new List<Stmt>() : InFrame(false, () => ParseStatements(new[] { "endfor" }, dropNeedle: true));
        return new ForStmt(target, iterable, filter, body, elseBody, recursive, t.Line, t.Column);
    }

    private IfStmt ParseIf() => InFrame(true, ParseIfBody);

    private IfStmt ParseIfBody()
    {
        var t = Expect(TokenKind.Name, "if");
        var branches = new List<(Expr, IReadOnlyList<Stmt>)>();
        List<Stmt> elseBody = new();
        while (true)
        {
            var test = ParseTuple(withCondExpr: false);
            var body = ParseStatements(new[] { "elif", "else", "endif" }, dropNeedle: false);
            branches.Add((test, body));
            var token = Next();
            if (token.IsName("elif")) continue;
            if (token.IsName("else")) elseBody = ParseStatements(new[] { "endif" }, dropNeedle: true);
            break;
        }
        return new IfStmt(branches, elseBody, t.Line, t.Column);
    }

    private Stmt ParseSet()
    {
        var t = Next();
        var target = ParseAssignTarget(withNamespace: true);
        if (SkipOp("=")) return new SetStmt(target, ParseTuple(withCondExpr: true), t.Line, t.Column);
        var filter = ParseFilter(null, startInline: false);
        var body = InFrame(false, () => ParseStatements(new[] { "endset" }, dropNeedle: true));
        return new SetBlockStmt(target, filter, body, t.Line, t.Column);
    }

    private MacroStmt ParseMacro()
    {
        var t = Next();
        string name = Expect(TokenKind.Name).Text;
        var (parameters, defaults) = InFrame(false, ParseSignature);
        int savedLoops = _loopDepth;
        _loopDepth = 0;
        try
        {
            var body = InFrame(false, () => ParseStatements(new[] { "endmacro" }, dropNeedle: true));
            return new MacroStmt(name, parameters, defaults, body, t.Line, t.Column);
        }
        finally { _loopDepth = savedLoops; }
    }

    private CallBlockStmt ParseCallBlock()
    {
        var t = Next();
        var (parameters, defaults) = Current.IsOp("(") ? ParseSignature() : (new List<string>(), new List<Expr>());
        var call = ParseExpression();
        if (call is not CallExpr callExpr) throw Fail("expected call", t);
        int savedLoops = _loopDepth;
        _loopDepth = 0;
        try
        {
            var body = InFrame(false, () => ParseStatements(new[] { "endcall" }, dropNeedle: true));
            return new CallBlockStmt(callExpr, parameters, defaults, body, t.Line, t.Column);
        }
        finally { _loopDepth = savedLoops; }
    }

    private FilterBlockStmt ParseFilterBlock()
    {
        var t = Next();
        var filter = ParseFilter(null, startInline: true)!;
        var body = InFrame(false, () => ParseStatements(new[] { "endfilter" }, dropNeedle: true));
        return new FilterBlockStmt(filter, body, t.Line, t.Column);
    }

    private WithStmt ParseWith()
    {
        var t = Next();
        var assignments = new List<(Expr, Expr)>();
        while (Current.Kind != TokenKind.BlockEnd)
        {
            if (assignments.Count > 0) Expect(TokenKind.Operator, ",");
            var target = ParseAssignTarget();
            Expect(TokenKind.Operator, "=");
            assignments.Add((target, ParseExpression()));
        }
        var body = InFrame(false, () => ParseStatements(new[] { "endwith" }, dropNeedle: true));
        return new WithStmt(assignments, body, t.Line, t.Column);
    }

    private (List<string> Parameters, List<Expr> Defaults) ParseSignature()
    {
        var parameters = new List<string>();
        var defaults = new List<Expr>();
        Expect(TokenKind.Operator, "(");
        while (!Current.IsOp(")"))
        {
            if (parameters.Count > 0) Expect(TokenKind.Operator, ",");
            var name = Expect(TokenKind.Name);
            if (SkipOp("=")) defaults.Add(ParseExpression());
            else if (defaults.Count > 0) throw Fail("non-default argument follows default argument", name);
            parameters.Add(name.Text);
        }
        Expect(TokenKind.Operator, ")");
        return (parameters, defaults);
    }

    private Expr ParseAssignTarget(string? extraEnd = null, bool withNamespace = false)
    {
        var target = ParseTuple(withCondExpr: true, extraEnd: extraEnd, simplified: true, withNamespace: withNamespace);
        bool CanAssign(Expr e) => e switch
        {
            NameExpr n => n.Name is not ("true" or "false" or "none" or "True" or "False" or "None"),
            NsRefExpr => true,
            TupleExpr tuple => tuple.Items.All(CanAssign),
            _ => false,
        };
        if (!CanAssign(target)) throw new JinjaSyntaxException($"can't assign to {TargetKind(target)}", target.Line, target.Column);
        return target;
    }

    private static string TargetKind(Expr e) => e switch
    {
        ConstExpr => "'const'",
        TupleExpr => "'tuple'",
        _ => "'" + e.GetType().Name.Replace("Expr", "", StringComparison.Ordinal).ToLowerInvariant() + "'",
    };

    // ---- expressions ----

    private Expr ParseExpression(bool withCondExpr = true) => withCondExpr ? ParseCondExpr() : ParseOr();

    private Expr ParseCondExpr()
    {
        var t = Current;
        var expr = ParseOr();
        while (SkipName("if"))
        {
            var test = ParseOr();
            Expr? otherwise = SkipName("else") ? ParseCondExpr() : null;
            expr = new CondExpr(test, expr, otherwise, t.Line, t.Column);
            foreach (var node in AstWalker.Descendants(expr)) _softened.Add(node);
        }
        return expr;
    }

    private Expr ParseOr()
    {
        var t = Current;
        var left = ParseAnd();
        while (SkipName("or")) left = new OrExpr(left, ParseAnd(), t.Line, t.Column);
        return left;
    }

    private Expr ParseAnd()
    {
        var t = Current;
        var left = ParseNot();
        while (SkipName("and")) left = new AndExpr(left, ParseNot(), t.Line, t.Column);
        return left;
    }

    private Expr ParseNot()
    {
        if (Current.IsName("not"))
        {
            var t = Next();
            return new NotExpr(ParseNot(), t.Line, t.Column);
        }
        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        var t = Current;
        var first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            if (Current.Kind == TokenKind.Operator && s_compareOps.Contains(Current.Text))
            {
                string op = Next().Text;
                rest.Add((op, ParseMath1()));
            }
            else if (SkipName("in")) rest.Add(("in", ParseMath1()));
            else if (Current.IsName("not") && Peek.IsName("in"))
            {
                Next();
                Next();
                rest.Add(("notin", ParseMath1()));
            }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(first, rest, t.Line, t.Column);
    }

    private Expr ParseMath1()
    {
        var t = Current;
        var left = ParseConcat();
        while (Current.IsOp("+") || Current.IsOp("-"))
        {
            string op = Next().Text;
            left = new BinaryExpr(op, left, ParseConcat(), t.Line, t.Column);
        }
        return left;
    }

    private Expr ParseConcat()
    {
        var t = Current;
        var parts = new List<Expr> { ParseMath2() };
        while (SkipOp("~")) parts.Add(ParseMath2());
        return parts.Count == 1 ? parts[0] : new ConcatExpr(parts, t.Line, t.Column);
    }

    private Expr ParseMath2()
    {
        var t = Current;
        var left = ParsePow();
        while (Current.Kind == TokenKind.Operator && Current.Text is "*" or "/" or "//" or "%")
        {
            string op = Next().Text;
            left = new BinaryExpr(op, left, ParsePow(), t.Line, t.Column);
        }
        return left;
    }

    private Expr ParsePow()
    {
        var t = Current;
        var left = ParseUnary();
        while (SkipOp("**")) left = new BinaryExpr("**", left, ParseUnary(), t.Line, t.Column);
        return left;
    }

    private Expr ParseUnary(bool withFilter = true)
    {
        var t = Current;
        Expr node;
        if (t.IsOp("-") || t.IsOp("+"))
        {
            Next();
            node = new UnaryExpr(t.Text, ParseUnary(withFilter: false), t.Line, t.Column);
        }
        else node = ParsePrimary();
        node = ParsePostfix(node);
        if (withFilter) node = ParseFilterExpr(node);
        return node;
    }

    private Expr ParsePrimary(bool withNamespace = false)
    {
        var t = Current;
        switch (t.Kind)
        {
            case TokenKind.Name:
                Next();
                if (t.Text is "true" or "True") return new ConstExpr(true, t.Line, t.Column);
                if (t.Text is "false" or "False") return new ConstExpr(false, t.Line, t.Column);
                if (t.Text is "none" or "None") return new ConstExpr(null, t.Line, t.Column);
                if (withNamespace && Current.IsOp("."))
                {
                    Next();
                    return new NsRefExpr(t.Text, Expect(TokenKind.Name).Text, t.Line, t.Column);
                }
                return new NameExpr(t.Text, t.Line, t.Column);
            case TokenKind.String:
                Next();
                string text = (string)t.Value!;
                while (Current.Kind == TokenKind.String) text += (string)Next().Value!;
                return new ConstExpr(text, t.Line, t.Column);
            case TokenKind.Integer:
            case TokenKind.Float:
                Next();
                return new ConstExpr(t.Value, t.Line, t.Column);
            case TokenKind.Operator when t.Text == "(":
                Next();
                var inner = ParseTuple(withCondExpr: true, explicitParentheses: true);
                Expect(TokenKind.Operator, ")");
                return inner;
            case TokenKind.Operator when t.Text == "[":
                return ParseList();
            case TokenKind.Operator when t.Text == "{":
                return ParseDict();
        }
        throw Fail($"unexpected '{t.Describe()}'", t);
    }

    private Expr ParseTuple(bool withCondExpr, string? extraEnd = null, bool simplified = false, bool explicitParentheses = false, bool withNamespace = false)
    {
        var t = Current;
        var items = new List<Expr>();
        bool isTuple = false;
        while (true)
        {
            if (items.Count > 0) Expect(TokenKind.Operator, ",");
            if (IsTupleEnd(extraEnd)) break;
            items.Add(simplified ? ParsePrimary(withNamespace) : ParseExpression(withCondExpr));
            if (Current.IsOp(",")) isTuple = true;
            else break;
        }
        if (!isTuple)
        {
            if (items.Count > 0) return items[0];
            if (!explicitParentheses) throw Fail($"Expected an expression, got '{Current.Describe()}'", Current);
        }
        return new TupleExpr(items, t.Line, t.Column);
    }

    private bool IsTupleEnd(string? extraEnd) =>
        Current.Kind is TokenKind.VariableEnd or TokenKind.BlockEnd || Current.IsOp(")") || (extraEnd is not null && Current.IsName(extraEnd));

    private ListExpr ParseList()
    {
        var t = Expect(TokenKind.Operator, "[");
        var items = new List<Expr>();
        while (!Current.IsOp("]"))
        {
            if (items.Count > 0) Expect(TokenKind.Operator, ",");
            if (Current.IsOp("]")) break;
            items.Add(ParseExpression());
        }
        Expect(TokenKind.Operator, "]");
        return new ListExpr(items, t.Line, t.Column);
    }

    private DictExpr ParseDict()
    {
        var t = Expect(TokenKind.Operator, "{");
        var pairs = new List<(Expr, Expr)>();
        while (!Current.IsOp("}"))
        {
            if (pairs.Count > 0) Expect(TokenKind.Operator, ",");
            if (Current.IsOp("}")) break;
            var key = ParseExpression();
            Expect(TokenKind.Operator, ":");
            pairs.Add((key, ParseExpression()));
        }
        Expect(TokenKind.Operator, "}");
        return new DictExpr(pairs, t.Line, t.Column);
    }

    private Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            if (Current.IsOp(".") || Current.IsOp("[")) node = ParseSubscript(node);
            else if (Current.IsOp("(")) node = ParseCall(node);
            else return node;
        }
    }

    private Expr ParseFilterExpr(Expr node)
    {
        while (true)
        {
            if (Current.IsOp("|")) node = ParseFilter(node, startInline: false)!;
            else if (Current.IsName("is")) node = ParseTest(node);
            else if (Current.IsOp("(")) node = ParseCall(node);
            else return node;
        }
    }

    private Expr ParseSubscript(Expr node)
    {
        var t = Next();
        if (t.IsOp("."))
        {
            var attr = Next();
            // A postfix expression keeps the position where the whole expression starts.
            if (attr.Kind == TokenKind.Name) return new GetAttrExpr(node, attr.Text, node.Line, node.Column);
            if (attr.Kind != TokenKind.Integer) throw Fail("expected name or number", attr);
            return new GetItemExpr(node, new ConstExpr(attr.Value, attr.Line, attr.Column), node.Line, node.Column);
        }
        var args = new List<Expr>();
        while (!Current.IsOp("]"))
        {
            if (args.Count > 0) Expect(TokenKind.Operator, ",");
            args.Add(ParseSubscribed());
        }
        Expect(TokenKind.Operator, "]");
        var key = args.Count == 1 ? args[0] : new TupleExpr(args, t.Line, t.Column);
        return new GetItemExpr(node, key, node.Line, node.Column);
    }

    private Expr ParseSubscribed()
    {
        var t = Current;
        Expr? start = null;
        if (Current.IsOp(":")) Next();
        else
        {
            var node = ParseExpression();
            if (!Current.IsOp(":")) return node;
            Next();
            start = node;
        }
        Expr? stop = null, step = null;
        if (!Current.IsOp(":") && !Current.IsOp("]") && !Current.IsOp(",")) stop = ParseExpression();
        if (SkipOp(":") && !Current.IsOp("]") && !Current.IsOp(",")) step = ParseExpression();
        return new SliceExpr(start, stop, step, t.Line, t.Column);
    }

    private Arguments ParseCallArgs()
    {
        var open = Expect(TokenKind.Operator, "(");
        var positional = new List<Expr>();
        var keywords = new List<(string, Expr)>();
        Expr? dynArgs = null, dynKwargs = null;
        bool requireComma = false;
        void Ensure(bool ok)
        {
            if (!ok) throw Fail("invalid syntax for function call expression", open);
        }
        while (!Current.IsOp(")"))
        {
            if (requireComma)
            {
                Expect(TokenKind.Operator, ",");
                if (Current.IsOp(")")) break;
            }
            if (Current.IsOp("*"))
            {
                Ensure(dynArgs is null && dynKwargs is null);
                Next();
                dynArgs = ParseExpression();
            }
            else if (Current.IsOp("**"))
            {
                Ensure(dynKwargs is null);
                Next();
                dynKwargs = ParseExpression();
            }
            else if (Current.Kind == TokenKind.Name && Peek.IsOp("="))
            {
                Ensure(dynKwargs is null);
                string key = Next().Text;
                Next();
                keywords.Add((key, ParseExpression()));
            }
            else
            {
                Ensure(dynArgs is null && dynKwargs is null && keywords.Count == 0);
                positional.Add(ParseExpression());
            }
            requireComma = true;
        }
        Expect(TokenKind.Operator, ")");
        return new Arguments(positional, keywords, dynArgs, dynKwargs);
    }

    private CallExpr ParseCall(Expr node) => new(node, ParseCallArgs(), node.Line, node.Column);

    private FilterExpr? ParseFilter(Expr? node, bool startInline)
    {
        FilterExpr? result = null;
        while (Current.IsOp("|") || startInline)
        {
            if (!startInline) Next();
            var name = Expect(TokenKind.Name);
            string full = name.Text;
            while (SkipOp(".")) full += "." + Expect(TokenKind.Name).Text;
            var args = Current.IsOp("(") ? ParseCallArgs() : Arguments.None;
            result = new FilterExpr(node, full, args, name.Line, name.Column);
            if (!Filters.Exists(full)) _unknownNames.Add((result, $"No filter named '{full}'.", _soft));
            node = result;
            startInline = false;
        }
        return result;
    }

    private Expr ParseTest(Expr node)
    {
        var t = Next();
        bool negated = SkipName("not");
        var name = Expect(TokenKind.Name);
        string full = name.Text;
        while (SkipOp(".")) full += "." + Expect(TokenKind.Name).Text;
        Arguments args;
        if (Current.IsOp("(")) args = ParseCallArgs();
        else if ((Current.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float
                  || Current.IsOp("(") || Current.IsOp("[") || Current.IsOp("{"))
                 && !Current.IsName("else") && !Current.IsName("or") && !Current.IsName("and"))
        {
            if (Current.IsName("is")) throw Fail("You cannot chain multiple tests with is", Current);
            var arg = ParsePostfix(ParsePrimary());
            args = new Arguments(new[] { arg }, Array.Empty<(string, Expr)>(), null, null);
        }
        else args = Arguments.None;
        Expr test = new TestExpr(node, full, args, name.Line, name.Column);
        if (!Tests.Exists(full)) _unknownNames.Add((test, $"No test named '{full}'.", _soft));
        return negated ? new NotExpr(test, t.Line, t.Column) : test;
    }
}
