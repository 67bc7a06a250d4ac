using System.Text.Json.Nodes;
using ML.Finetune.Chat.Jinja;

namespace ML.Finetune.Tests.Chat;

/// <summary>
/// Small templates covering one Jinja feature each (whitespace control, scoping, loops, macros, operators, Python
/// value printing, undefined values, every filter and test chat templates use, tojson, string methods, globals,
/// errors), compared with what transformers' jinja environment renders for them (Fixtures/jinja-snippets*.json).
/// </summary>
public class JinjaSnippetTests
{
    public static IEnumerable<object[]> SnippetIds =>
        ChatFixtures.Json("jinja-snippets.json")["snippets"]!.AsArray().Select(s => new object[] { (string)s!["id"]! });

    private static readonly Lazy<Dictionary<string, JsonObject>> s_snippets = new(() =>
        ChatFixtures.Json("jinja-snippets.json")["snippets"]!.AsArray().ToDictionary(s => (string)s!["id"]!, s => s!.AsObject()));

    private static readonly Lazy<Dictionary<string, JsonObject>> s_expected = new(() =>
        ChatFixtures.Json("jinja-snippets.expected.json")["snippets"]!.AsArray().ToDictionary(s => (string)s!["id"]!, s => s!.AsObject()));

    [Theory]
    [MemberData(nameof(SnippetIds))]
    public void RendersLikeJinja2(string id)
    {
        var snippet = s_snippets.Value[id];
        var expected = s_expected.Value[id];
        var variables = snippet["context"]!.AsObject().ToDictionary(kv => kv.Key, kv => (object?)kv.Value?.DeepClone());
        string? actual = null;
        Exception? error = null;
        try
        {
            actual = JinjaTemplate.Parse((string)snippet["template"]!).Render(variables, ChatFixtures.Now);
        }
        catch (JinjaException e)
        {
            error = e;
        }
        if (expected["expected"] is { } text)
        {
            Assert.True(error is null, $"{id}: jinja2 rendered, this threw {error?.GetType().Name}: {error?.Message}");
            Assert.True((string)text! == actual, $"{id}: " + ChatFixtures.Diff((string)text!, actual!));
        }
        else
        {
            string? problem = ChatFixtures.CheckError(expected["error"]!, error);
            Assert.True(problem is null, $"{id}: {problem}" + (actual is null ? "" : $" (rendered '{ChatFixtures.Escape(actual)}')"));
        }
    }
}
