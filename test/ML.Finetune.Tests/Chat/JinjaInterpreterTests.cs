using System.Text.Json.Nodes;
using ML.Finetune.Chat.Jinja;

namespace ML.Finetune.Tests.Chat;

/// <summary>What the jinja2 references cannot show: positions in errors, refusals of what is not implemented, generation spans.</summary>
public class JinjaInterpreterTests
{
    private static string Render(string template, object? vars = null) =>
        JinjaTemplate.Parse(template).Render(vars is null ? new Dictionary<string, object?>() : (Dictionary<string, object?>)vars);

    [Theory]
    [InlineData("{% include 'other.jinja' %}", "statement 'include'", 1, 4)]
    [InlineData("a\n{% extends 'base' %}", "statement 'extends'", 2, 4)]
    [InlineData("{% for x in [1] recursive %}{{ loop(x) }}{% endfor %}", "recursive for loops", 1, 4)]
    [InlineData("{{ {'a': 1}|xmlattr }}", "filter 'xmlattr'", 1, 13)]
    [InlineData("\n\n   {{ [1, 2]|map('string') }}", "printing a generator object", 3, 14)]
    [InlineData("{{ lipsum() }}", "global function 'lipsum'", 1, 4)]
    [InlineData("{{ 'x'.encode() }}", "str.encode()", 1, 4)]
    [InlineData("{{ 'x'|groupby('a') }}", "filter 'groupby'", 1, 8)]
    [InlineData("{{ '{:e}'.format(1.5) }}", "format spec 'e' for a float", 1, 4)]
    [InlineData("{{ 2 ** 70 }}", "integer arithmetic beyond 64 bits", 1, 4)]
    public void ConstructsNotImplementedFailWithTheirNameAndPosition(string template, string construct, int line, int column)
    {
        var e = Assert.Throws<JinjaNotImplementedException>(() => Render(template));
        Assert.Equal(construct, e.Construct);
        Assert.Equal(line, e.Line);
        Assert.Equal(column, e.Column);
        Assert.Equal($"not implemented: {construct} at {line}:{column}", e.Message);
    }

    [Fact]
    public void RuntimeErrorsNameTheTemplatePosition()
    {
        var e = Assert.Throws<JinjaRuntimeException>(() => Render("line one\n{% for m in messages %}{{ m.content + 1 }}{% endfor %}",
            new Dictionary<string, object?> { ["messages"] = JsonNode.Parse("[{\"content\": \"x\"}]") }));
        Assert.Equal(2, e.Line);
        Assert.Equal(27, e.Column);
        Assert.Contains("unsupported operand type(s) for +: 'str' and 'int'", e.Message);
        Assert.Contains("(template line 2, column 27)", e.Message);
    }

    [Fact]
    public void SyntaxErrorsNameTheTemplatePosition()
    {
        var e = Assert.Throws<JinjaSyntaxException>(() => JinjaTemplate.Parse("ok\n  {% if x %}\n  {{ 1 + }}\n{% endif %}"));
        Assert.Equal(3, e.Line);
        Assert.Equal(10, e.Column);
    }

    [Fact]
    public void RaiseExceptionCarriesTheTemplatesMessage()
    {
        var e = Assert.Throws<TemplateRaisedException>(() => Render("{{ raise_exception('Roles must alternate') }}"));
        Assert.Equal("Roles must alternate", e.Detail);
        Assert.Equal(1, e.Line);
    }

    [Fact]
    public void GenerationBlocksReportTheRangesOfTheirOutput()
    {
        var template = JinjaTemplate.Parse(
            "{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}|end{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n{% endfor %}");
        Assert.True(template.HasGenerationBlocks);
        var messages = JsonNode.Parse("[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"},{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"ans\"}]");
        var (text, spans) = template.RenderWithGenerationSpans(new Dictionary<string, object?> { ["messages"] = messages });
        // trim_blocks removes the newline after {% endif %}.
        Assert.Equal("<user>hi<assistant>yo|end<user>q<assistant>ans|end", text);
        Assert.Equal(new[] { "yo|end", "ans|end" }, spans.Select(s => text[s.Start..s.End]));
        Assert.False(JinjaTemplate.Parse("{{ 'x' }}").HasGenerationBlocks);
    }

    [Fact]
    public void GenerationInsideAMacroIsRefusedRatherThanMisplaced()
    {
        // transformers records a generation block at the length of the text yielded so far, which inside a macro is
        // not the block's position in the output.
        var e = Assert.Throws<JinjaNotImplementedException>(() =>
            Render("{% macro m() %}ab{% generation %}x{% endgeneration %}{% endmacro %}{{ m() }}"));
        Assert.StartsWith("a generation block inside a macro", e.Construct);
    }

    [Fact]
    public void TemplateVariablesOverrideGlobalsAndAcceptDotNetValues()
    {
        var vars = new Dictionary<string, object?>
        {
            ["range"] = "shadowed",
            ["n"] = 3,
            ["f"] = 2.5f,
            ["list"] = new List<object?> { 1, "two", null },
            ["map"] = new Dictionary<string, object?> { ["k"] = true },
        };
        Assert.Equal("shadowed 3 2.5 [1, 'two', None] {'k': True}", Render("{{ range }} {{ n }} {{ f }} {{ list }} {{ map }}", vars));
    }

    [Fact]
    public void StrftimeNowUsesTheGivenClock()
    {
        var t = JinjaTemplate.Parse("{{ strftime_now('%d %B %Y, %H:%M') }}");
        Assert.Equal("01 February 2026, 17:05", t.Render(new Dictionary<string, object?>(), new DateTime(2026, 2, 1, 17, 5, 0)));
    }
}
