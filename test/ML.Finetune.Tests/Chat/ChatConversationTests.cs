using System.Text.Json.Nodes;
using ML.Finetune.Chat;

namespace ML.Finetune.Tests.Chat;

public class ChatConversationTests
{
    [Fact]
    public void ParsesAListOrAMessagesObjectKeepingExtraFieldsInOrder()
    {
        const string list = "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi\"}," +
                            "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}]}," +
                            "{\"role\":\"assistant\",\"content\":\"Done.\",\"reasoning_content\":\"because\"}]";
        var a = ChatConversation.Parse(list);
        var b = ChatConversation.Parse("{\"messages\": " + list + ", \"id\": 7}");
        Assert.Equal(4, a.Count);
        Assert.Equal(a.Select(m => m.ToString()), b.Select(m => m.ToString()));
        Assert.Equal(new[] { "system", "user", "assistant", "assistant" }, a.Select(m => m.Role));
        Assert.Equal("Be brief.", a[0].Content);
        Assert.Null(a[2].Content);
        Assert.Equal(new[] { "role", "content", "tool_calls" }, a[2].FieldNames);
        Assert.Equal("because", (string)a[3].GetField("reasoning_content")!);
        Assert.Equal(list, ChatConversation.ToJson(a));
    }

    [Theory]
    [InlineData("[{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]", "$[1]: field 'role' is missing")]
    [InlineData("{\"messages\": [{\"role\": 3, \"content\": \"b\"}]}", "$.messages[0].role: expected a non-empty string, got the number 3")]
    [InlineData("[{\"role\": \"user\", \"content\": {\"text\": \"b\"}}]", "$[0].content: expected a string, null or a list of content parts, got an object")]
    [InlineData("[{\"role\": \"user\", \"content\": \"a\"}, \"hello\"]", "$[1]: expected a message object")]
    [InlineData("{\"conversation\": []}", "the object has no field 'messages' (fields: conversation)")]
    [InlineData("{\"messages\": \"hi\"}", "$.messages: expected a list of messages, got a string")]
    [InlineData("[]", "$: the conversation has no messages")]
    [InlineData("42", "$: expected a list of messages or an object with a \"messages\" list, got the number 42")]
    [InlineData("[{\"role\": \"user\",\n \"content\": \"a\"", "invalid JSON at line 2")]
    public void BadConversationsNameTheFieldAndPosition(string json, string message)
    {
        var e = Assert.Throws<FormatException>(() => ChatConversation.Parse(json, "train.jsonl line 3"));
        Assert.StartsWith("train.jsonl line 3: ", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void MessagesAreImmutableCopies()
    {
        var node = JsonNode.Parse("{\"role\":\"user\",\"content\":\"x\",\"meta\":{\"k\":1}}")!.AsObject();
        var message = ChatMessage.FromJson(node);
        node["content"] = "changed";
        Assert.Equal("x", message.Content);
        var meta = message.GetField("meta")!;
        meta["k"] = 2;
        Assert.Equal(1, (int)message.GetField("meta")!["k"]!);
        var with = message.With("name", "tool-a");
        Assert.False(message.HasField("name"));
        Assert.Equal(new[] { "role", "content", "meta", "name" }, with.FieldNames);
        Assert.Throws<FormatException>(() => message.With("role", 5));
    }
}
