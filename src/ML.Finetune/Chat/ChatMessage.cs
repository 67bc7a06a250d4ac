using System.Text.Json;
using System.Text.Json.Nodes;

namespace ML.Finetune.Chat;

/// <summary>
/// One message of a conversation: a role ("system", "user", "assistant", "tool", ...) and its content, plus any
/// other fields a chat template reads (<c>tool_calls</c>, <c>reasoning_content</c>, <c>name</c>, ...). Fields keep
/// the order they were given in, as templates see a Python dict. Immutable.
/// </summary>
public sealed class ChatMessage
{
    private readonly JsonObject _fields;

    /// <summary>A message with text content (null content is passed to the template as None).</summary>
    public ChatMessage(string role, string? content)
    {
        ArgumentException.ThrowIfNullOrEmpty(role);
        _fields = new JsonObject { ["role"] = role, ["content"] = content };
    }

    private ChatMessage(JsonObject fields) => _fields = fields;

    public static ChatMessage System(string content) => new("system", content);
    public static ChatMessage User(string content) => new("user", content);
    public static ChatMessage Assistant(string content) => new("assistant", content);

    /// <summary>The message's role.</summary>
    public string Role => (string)_fields["role"]!;

    /// <summary>The text content; null when the message has no content field, null content, or a list of content parts.</summary>
    public string? Content => _fields["content"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;

    /// <summary>Whether content is a list of parts (<c>[{"type": "text", "text": ...}]</c>).</summary>
    public bool HasContentParts => _fields["content"] is JsonArray;

    /// <summary>The names of all fields, in order (role and content included).</summary>
    public IEnumerable<string> FieldNames => _fields.Select(kv => kv.Key);

    /// <summary>A copy of a field's value, or null when absent.</summary>
    public JsonNode? GetField(string name) => _fields[name]?.DeepClone();

    public bool HasField(string name) => _fields.ContainsKey(name);

    /// <summary>A copy of this message with <paramref name="name"/> set (added last if new).</summary>
    public ChatMessage With(string name, JsonNode? value)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var copy = (JsonObject)_fields.DeepClone();
        copy[name] = value?.DeepClone();
        return FromJson(copy, "message");
    }

    /// <summary>The message as a JSON object (a copy).</summary>
    public JsonObject ToJson() => (JsonObject)_fields.DeepClone();

    public override string ToString() => _fields.ToJsonString(new JsonSerializerOptions { Encoder = global::System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });

    /// <summary>
    /// A message from a JSON object. <c>role</c> must be a non-empty string; <c>content</c>, when present, a string,
    /// null, or a list of content parts. Errors name <paramref name="path"/> (e.g. <c>$.messages[2]</c>) and the field.
    /// </summary>
    public static ChatMessage FromJson(JsonObject message, string path = "message")
    {
        ArgumentNullException.ThrowIfNull(message);
        var role = message["role"];
        if (role is null)
            throw new FormatException($"{path}: field 'role' is missing; every message needs a role (\"system\", \"user\", \"assistant\", ...).");
        if (role is not JsonValue rv || !rv.TryGetValue(out string? roleText) || string.IsNullOrEmpty(roleText))
            throw new FormatException($"{path}.role: expected a non-empty string, got {Describe(role)}.");
        if (message.TryGetPropertyValue("content", out var content) && content is not null && content is not JsonArray
            && !(content is JsonValue cv && cv.TryGetValue(out string? _)))
            throw new FormatException($"{path}.content: expected a string, null or a list of content parts, got {Describe(content)}.");
        return new ChatMessage((JsonObject)message.DeepClone());
    }

    internal static string Describe(JsonNode? node) => node switch
    {
        null => "null",
        JsonObject => "an object",
        JsonArray => "a list",
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => "a string",
            JsonValueKind.Number => $"the number {v.ToJsonString()}",
            JsonValueKind.True or JsonValueKind.False => $"the boolean {v.ToJsonString()}",
            _ => v.ToJsonString(),
        },
        _ => node.ToJsonString(),
    };

    private object? _python;

    // Templates cannot change a dict (immutable sandbox), so one Python form serves every rendering.
    internal object? ToPython() => _python ??= Jinja.PyJson.FromNode(_fields);
}
