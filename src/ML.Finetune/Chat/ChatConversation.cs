using System.Text.Json;
using System.Text.Json.Nodes;

namespace ML.Finetune.Chat;

/// <summary>Reads conversations from JSON text: <c>[{"role": ..., "content": ...}, ...]</c> or <c>{"messages": [...]}</c>.</summary>
public static class ChatConversation
{
    private static readonly JsonDocumentOptions s_options = new() { AllowTrailingCommas = false, CommentHandling = JsonCommentHandling.Disallow };

    /// <summary>
    /// Parses a conversation. <paramref name="source"/> (a file name, "line 12 of data.jsonl", a column name ...) is
    /// put in front of error messages, which also name the field (<c>$.messages[2].role</c>) or the JSON position.
    /// </summary>
    public static IReadOnlyList<ChatMessage> Parse(string json, string? source = null)
    {
        ArgumentNullException.ThrowIfNull(json);
        string where = source is null ? "" : source + ": ";
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(json, documentOptions: s_options);
        }
        catch (JsonException e)
        {
            throw new FormatException($"{where}invalid JSON at line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}: {FirstSentence(e.Message)}", e);
        }
        return FromJson(root, source);
    }

    /// <summary>A conversation from an already parsed JSON node (a list of messages or an object with "messages").</summary>
    public static IReadOnlyList<ChatMessage> FromJson(JsonNode? root, string? source = null)
    {
        string where = source is null ? "" : source + ": ";
        string path = "$";
        JsonArray list;
        switch (root)
        {
            case JsonArray array:
                list = array;
                break;
            case JsonObject obj:
                if (!obj.TryGetPropertyValue("messages", out var messages))
                    throw new FormatException($"{where}$: expected a list of messages or an object with a \"messages\" list; the object has no field 'messages' (fields: {string.Join(", ", obj.Select(kv => kv.Key))}).");
                if (messages is not JsonArray messageArray)
                    throw new FormatException($"{where}$.messages: expected a list of messages, got {ChatMessage.Describe(messages)}.");
                list = messageArray;
                path = "$.messages";
                break;
            default:
                throw new FormatException($"{where}$: expected a list of messages or an object with a \"messages\" list, got {ChatMessage.Describe(root)}.");
        }
        if (list.Count == 0) throw new FormatException($"{where}{path}: the conversation has no messages.");
        var result = new List<ChatMessage>(list.Count);
        for (int i = 0; i < list.Count; i++)
        {
            string itemPath = $"{path}[{i}]";
            if (list[i] is not JsonObject message)
                throw new FormatException($"{where}{itemPath}: expected a message object with 'role' and 'content', got {ChatMessage.Describe(list[i])}.");
            try
            {
                result.Add(ChatMessage.FromJson(message, itemPath));
            }
            catch (FormatException e)
            {
                throw new FormatException(where + e.Message, e);
            }
        }
        return result;
    }

    /// <summary>Writes a conversation as a JSON list of message objects.</summary>
    public static string ToJson(IEnumerable<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var array = new JsonArray();
        foreach (var m in messages) array.Add(m.ToJson());
        return array.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
    }

    private static string FirstSentence(string message)
    {
        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        return cut > 0 ? message[..cut] : message;
    }
}
