namespace ML.Finetune.Chat.Jinja;

/// <summary>
/// A Jinja template rendered the way transformers renders chat templates: jinja2's
/// <c>ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)</c> with loop controls,
/// <c>{% generation %}</c>, <c>raise_exception</c>, <c>strftime_now</c> and a <c>tojson</c> that calls
/// <c>json.dumps(ensure_ascii=False)</c>. Values follow Python semantics (str(), repr(), truthiness, int/float).
/// Constructs this interpreter does not implement throw <see cref="JinjaNotImplementedException"/> instead of
/// rendering text that could differ from jinja2's.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly IReadOnlyList<Stmt> _body;

    private JinjaTemplate(string source, IReadOnlyList<Stmt> body)
    {
        Source = source;
        _body = body;
        HasGenerationBlocks = AstWalker.Any(body, n => n is GenerationStmt);
    }

    /// <summary>Parses <paramref name="source"/>; throws <see cref="JinjaSyntaxException"/> where jinja2 would raise TemplateSyntaxError.</summary>
    public static JinjaTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new JinjaTemplate(source, Parser.Parse(source));
    }

    public string Source { get; }

    /// <summary>Whether the template marks assistant text with <c>{% generation %}</c> blocks.</summary>
    public bool HasGenerationBlocks { get; }

    /// <summary>
    /// Renders with <paramref name="variables"/>: strings, numbers, booleans, null, System.Text.Json nodes or
    /// elements, lists and dictionaries (converted to Python values; JSON integers stay ints, "1.0" is a float).
    /// </summary>
    public string Render(IReadOnlyDictionary<string, object?> variables, DateTime? now = null) =>
        RenderWithGenerationSpans(variables, now).Text;

    /// <summary>Renders and returns the character ranges of the text each <c>{% generation %}</c> block produced.</summary>
    public (string Text, IReadOnlyList<(int Start, int End)> GenerationSpans) RenderWithGenerationSpans(IReadOnlyDictionary<string, object?> variables, DateTime? now = null)
    {
        ArgumentNullException.ThrowIfNull(variables);
        var converted = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var kv in variables) converted[kv.Key] = PyJson.FromClr(kv.Value);
        return RenderPython(converted, now);
    }

    internal (string Text, IReadOnlyList<(int Start, int End)> GenerationSpans) RenderPython(IReadOnlyDictionary<string, object?> pythonVariables, DateTime? now)
    {
        var spans = new List<(int, int)>();
        var interpreter = new Interpreter(Globals.Create(() => now ?? DateTime.Now), spans);
        var scope = new Scope(null);
        foreach (var kv in pythonVariables) scope.Set(kv.Key, kv.Value);
        string text = interpreter.Render(_body, scope);
        return (text, spans);
    }
}
