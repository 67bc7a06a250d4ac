using System.Text.Json.Nodes;
using ML.Finetune.Chat;
using ML.Finetune.Chat.Jinja;

namespace ML.Finetune.Tests.Chat;

/// <summary>
/// The chat-template fixtures (test/ML.Finetune.Tests/Chat/Fixtures, see its README): templates, the conversations
/// they were rendered with, and transformers' outputs (tools/chat-template-reference/).
/// </summary>
internal static class ChatFixtures
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "Chat", "Fixtures");

    /// <summary>The clock the references were rendered with (strftime_now).</summary>
    public static readonly DateTime Now = new(2025, 3, 14, 9, 26, 53);

    public static string Path_(params string[] parts) => Path.Combine(new[] { Root }.Concat(parts).ToArray());

    public static JsonNode Json(params string[] parts) => JsonNode.Parse(File.ReadAllText(Path_(parts)))!;

    private static readonly Lazy<Dictionary<string, JsonObject>> s_conversations = new(() =>
        Json("conversations.json")["conversations"]!.AsArray().Select(c => c!.AsObject()).ToDictionary(c => (string)c["id"]!));

    public static IReadOnlyList<ChatMessage> Messages(string conversationId) =>
        ChatConversation.FromJson(s_conversations.Value[conversationId]["messages"]!.DeepClone(), conversationId);

    public static IReadOnlyList<JsonNode>? Tools(string conversationId) =>
        s_conversations.Value[conversationId]["tools"] is JsonArray tools ? tools.Select(t => t!.DeepClone()).ToList() : null;

    /// <summary>Options for a reference render: the conversation's tools, the variant's kwargs, the fixed clock.</summary>
    public static ChatTemplateOptions Options(string conversationId, JsonObject? kwargs) => new()
    {
        Tools = Tools(conversationId),
        Variables = kwargs?.ToDictionary(kv => kv.Key, kv => (object?)kv.Value?.DeepClone()),
        Now = Now,
    };

    public static IEnumerable<string> ReferenceTemplateIds =>
        Directory.EnumerateDirectories(Path_("templates")).Select(Path.GetFileName).OrderBy(s => s, StringComparer.Ordinal)!;

    public static IReadOnlyDictionary<string, string> StringMap(JsonNode? node) =>
        node!.AsObject().ToDictionary(kv => kv.Key, kv => (string)kv.Value!);

    /// <summary>
    /// Checks that rendering failed the way jinja2 did: the same message for the template's own raise_exception,
    /// a syntax error for a syntax error, a run-time error otherwise. Returns null when it matches.
    /// </summary>
    public static string? CheckError(JsonNode expected, Exception? actual)
    {
        bool raised = (bool)expected["raised"]!;
        bool syntax = (bool?)expected["syntax"] ?? false;
        string type = (string)expected["type"]!;
        string message = (string)expected["message"]!;
        return actual switch
        {
            null => $"rendered, but jinja2 raised {type}: {message}",
            TemplateRaisedException r when raised => r.Detail == message ? null : $"raised '{r.Detail}', jinja2 raised '{message}'",
            JinjaNotImplementedException n => $"not implemented ({n.Message}); jinja2 raised {type}: {message}",
            JinjaSyntaxException when syntax || type is "TemplateAssertionError" or "SyntaxError" => null,
            JinjaRuntimeException when !raised && !syntax && type is not ("TemplateAssertionError" or "SyntaxError") => null,
            _ => $"threw {actual.GetType().Name} ({actual.Message}); jinja2 raised {type}: {message}",
        };
    }

    /// <summary>Where two strings first differ, for failure messages.</summary>
    public static string Diff(string expected, string actual)
    {
        int i = 0;
        while (i < Math.Min(expected.Length, actual.Length) && expected[i] == actual[i]) i++;
        string Around(string s) => Escape(s.Substring(Math.Max(0, i - 40), Math.Min(s.Length, i + 40) - Math.Max(0, i - 40)));
        return $"differs at char {i} (lengths {expected.Length}/{actual.Length}):\n  expected …{Around(expected)}…\n  actual   …{Around(actual)}…";
    }

    public static string Escape(string s) => s.Replace("\\", "\\\\").Replace("\n", "\\n").Replace("\r", "\\r").Replace("\t", "\\t");
}
