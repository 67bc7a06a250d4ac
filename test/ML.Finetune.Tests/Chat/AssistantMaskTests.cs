using System.Text.Json.Nodes;
using ML.Finetune.Chat;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Tests.Chat;

/// <summary>
/// Assistant-only masks: which characters and tokens of a rendered conversation are trained. Templates with
/// <c>{% generation %}</c> blocks (TRL's training variants) must give transformers' own spans, ids and
/// <c>assistant_masks</c>; the model templates (prefix-diff) must cover exactly each assistant message's content
/// plus its end-of-turn token, which these tests spell out per template from the template's own logic.
/// </summary>
public class AssistantMaskTests
{
    private static readonly Lazy<CausalLMTokenizer> s_tokenizer = new(() => CausalLMTokenizer.FromFolder(ChatFixtures.Path_("tiny-chat-tokenizer")));
    private static readonly Lazy<JsonNode> s_masks = new(() => ChatFixtures.Json("masks", "references.json"));

    [Fact]
    public void GenerationBlocksGiveTransformersSpansIdsAndMasks()
    {
        var failures = new List<string>();
        var entries = s_masks.Value["generation"]!.AsArray();
        foreach (var entry in entries)
        {
            string name = (string)entry!["template"]!, conversation = (string)entry["conversation"]!;
            var template = new ChatTemplate(File.ReadAllText(ChatFixtures.Path_("generation-templates", name + ".jinja")), ChatFixtures.StringMap(entry["special_tokens"]));
            Assert.True(template.HasGenerationBlocks());
            var result = template.Tokenize(s_tokenizer.Value, ChatFixtures.Messages(conversation), ChatFixtures.Options(conversation, null));
            string label = $"{name}/{conversation}";
            // transformers counts Python characters (code points); AssistantSpan counts UTF-16 units.
            string expectedText = (string)entry["text"]!;
            var spans = entry["generation_spans"]!.AsArray().Select(s => (Start: Utf16(expectedText, (int)s![0]!), End: Utf16(expectedText, (int)s[1]!))).ToList();
            if (result.Rendering.Text != (string)entry["text"]!) failures.Add($"{label}: text " + ChatFixtures.Diff((string)entry["text"]!, result.Rendering.Text));
            else if (!spans.SequenceEqual(result.Rendering.AssistantSpans.Select(s => (s.Start, s.End))))
                failures.Add($"{label}: spans {string.Join(",", result.Rendering.AssistantSpans)} vs {string.Join(",", spans)}");
            else if (!Ints(entry["input_ids"]).SequenceEqual(result.Ids)) failures.Add($"{label}: ids differ");
            else if (!Ints(entry["assistant_masks"]).SequenceEqual(result.TrainedMask.Select(b => b ? 1 : 0))) failures.Add($"{label}: masks differ");
            Assert.Equal(AssistantSpanMethod.GenerationBlocks, result.Rendering.Method);
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.True(entries.Count >= 50, $"only {entries.Count} generation references");
    }

    [Fact]
    public void RenderedConversationsTokenizeToTransformersIds()
    {
        var failures = new List<string>();
        int checkedCount = 0;
        foreach (var entry in s_masks.Value["tokenized"]!.AsArray())
        {
            if ((bool)entry!["add_generation_prompt"]!) continue;
            string id = (string)entry["template"]!, conversation = (string)entry["conversation"]!;
            var template = ChatTemplate.FromFolder(ChatFixtures.Path_("templates", id));
            var messages = ChatFixtures.Messages(conversation);
            if (!messages.Any(m => m.Role == "assistant")) continue;
            if (s_unlocatable.Contains((id, conversation))) continue;
            ChatTokenization result;
            try
            {
                result = template.Tokenize(s_tokenizer.Value, messages, ChatFixtures.Options(conversation, null));
            }
            catch (InvalidOperationException e)
            {
                failures.Add($"{id}/{conversation}: {e.Message}");
                continue;
            }
            checkedCount++;
            if (result.Rendering.Text != (string)entry["text"]!) failures.Add($"{id}/{conversation}: text differs");
            else if (!Ints(entry["input_ids"]).SequenceEqual(result.Ids)) failures.Add($"{id}/{conversation}: ids differ");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.True(checkedCount >= 100, $"only {checkedCount} conversations checked");
    }

    public static IEnumerable<object[]> TemplateIds => ChatFixtures.ReferenceTemplateIds.Select(id => new object[] { id });

    [Theory]
    [MemberData(nameof(TemplateIds))]
    public void MaskCoversExactlyEachAssistantMessagesContentAndEndOfTurn(string id)
    {
        var template = ChatTemplate.FromFolder(ChatFixtures.Path_("templates", id));
        Assert.False(template.HasGenerationBlocks());
        var conversations = ChatFixtures.Json("conversations.json")["conversations"]!.AsArray().Select(c => (string)c!["id"]!);
        var failures = new List<string>();
        int spansChecked = 0;
        foreach (string conversation in conversations)
        {
            var messages = ChatFixtures.Messages(conversation);
            if (!messages.Any(m => m.Role == "assistant")) continue;
            var options = ChatFixtures.Options(conversation, null);
            if (s_unlocatable.Contains((id, conversation)))
            {
                var e = Assert.Throws<InvalidOperationException>(() => template.Tokenize(s_tokenizer.Value, messages, options));
                Assert.Contains("{% generation %}", e.Message);
                continue;
            }
            ChatTokenization result;
            try
            {
                result = template.Tokenize(s_tokenizer.Value, messages, options);
            }
            catch (ML.Finetune.Chat.Jinja.JinjaRuntimeException)
            {
                continue; // the template rejects this conversation (checked against jinja2 by the reference tests)
            }
            Assert.Equal(AssistantSpanMethod.PrefixDiff, result.Rendering.Method);
            string text = result.Rendering.Text;
            Assert.Equal(template.Render(messages, false, options), text);
            var assistantIndices = Enumerable.Range(0, messages.Count).Where(i => messages[i].Role == "assistant").ToList();
            Assert.Equal(assistantIndices, result.Rendering.AssistantSpans.Select(s => s.MessageIndex));
            foreach (var span in result.Rendering.AssistantSpans)
            {
                string? expected = ExpectedTrainedText(id, messages, span.MessageIndex);
                string actual = text[span.Start..span.End];
                if (expected is null)
                {
                    if (!actual.EndsWith(EndOfTurn[id], StringComparison.Ordinal)) failures.Add($"{conversation}[{span.MessageIndex}]: '{ChatFixtures.Escape(actual)}' does not end the turn");
                }
                else if (actual != expected) failures.Add($"{conversation}[{span.MessageIndex}]: trained '{ChatFixtures.Escape(actual)}', expected '{ChatFixtures.Escape(expected)}'");
                spansChecked++;
            }
            // Token level: a token is trained exactly when it overlaps a span (transformers' char_to_token rule), and a
            // token reaching outside a span only does so by whitespace merged into it (e.g. "\n\n" across a header's
            // newline and content that starts with a newline).
            Assert.Equal(result.Ids.Count, result.TrainedMask.Count);
            var spans = result.Rendering.AssistantSpans;
            for (int t = 0; t < result.Ids.Count; t++)
            {
                var (a, b) = result.TokenOffsets[t];
                bool overlaps = spans.Any(sp => a < sp.End && b > sp.Start);
                if (overlaps != result.TrainedMask[t]) failures.Add($"{conversation}: token {t} '{ChatFixtures.Escape(text[a..b])}' trained={result.TrainedMask[t]}, overlaps a span={overlaps}");
                if (!overlaps) continue;
                var outside = Enumerable.Range(a, b - a).Where(c => !spans.Any(sp => c >= sp.Start && c < sp.End));
                if (outside.Any(c => !char.IsWhiteSpace(text[c]))) failures.Add($"{conversation}: token {t} '{ChatFixtures.Escape(text[a..b])}' straddles a span edge");
            }
        }
        Assert.True(failures.Count == 0, $"{id}:\n" + string.Join("\n", failures));
        Assert.True(spansChecked >= 10, $"{id}: only {spansChecked} assistant messages checked");
    }

    /// <summary>
    /// Conversations whose assistant text cannot be located without generation blocks, so that masking must refuse
    /// them: Qwen3 renders a tool-calling turn with an empty reasoning block only when it is the last message, and
    /// the tool call that follows its empty content has no marker to find it by.
    /// </summary>
    private static readonly HashSet<(string, string)> s_unlocatable = new() { ("qwen3", "tool-call") };

    private static readonly Dictionary<string, string> EndOfTurn = new()
    {
        ["llama-3.1-instruct"] = "<|eot_id|>", ["llama-3.2-instruct"] = "<|eot_id|>",
        ["qwen2.5-instruct"] = "<|im_end|>", ["qwen3"] = "<|im_end|>", ["smollm2-instruct"] = "<|im_end|>",
        ["mistral-7b-instruct-v0.3"] = "</s>",
        ["phi-3-mini-4k-instruct"] = "<|end|>", ["phi-3.5-mini-instruct"] = "<|end|>", ["phi-4-mini-instruct"] = "<|end|>",
        ["gemma-2-it"] = "<end_of_turn>", ["gemma-3-it"] = "<end_of_turn>",
        ["deepseek-r1-distill-qwen"] = "<｜end▁of▁sentence｜>",
    };

    /// <summary>
    /// The text each template writes for an assistant message after its header, up to and including the end-of-turn
    /// token (from the template source); null where the template writes tool calls (only the end of turn is checked).
    /// </summary>
    private static string? ExpectedTrainedText(string id, IReadOnlyList<ChatMessage> messages, int index)
    {
        var m = messages[index];
        if (m.HasField("tool_calls") || m.Content is not { } content) return null;
        string eot = EndOfTurn[id];
        static string Strip(string s) => s.Trim(' ', '\t', '\n', '\r', '\v', '\f');
        string body = id switch
        {
            "llama-3.1-instruct" or "llama-3.2-instruct" or "gemma-2-it" or "gemma-3-it" => Strip(content),
            // Mistral v0.3 shows the system prompt in the last user turn only when a user message ends the conversation,
            // so with a system message the generation prompt never matches the whole rendering; the span then starts
            // at the content, without the space the template writes before it.
            "mistral-7b-instruct-v0.3" => (messages[0].Role == "system" ? "" : " ") + Strip(content),
            "deepseek-r1-distill-qwen" => content.Contains("</think>") ? content.Split("</think>")[^1] : content,
            "qwen3" => Qwen3Assistant(messages, index),
            _ => content,
        };
        return body + eot;
    }

    // Qwen3's template: reasoning is split off the content; turns after the last user query show it in <think>.
    private static string Qwen3Assistant(IReadOnlyList<ChatMessage> messages, int index)
    {
        string content = messages[index].Content!;
        string reasoning = "";
        if (messages[index].GetField("reasoning_content") is JsonValue r && r.TryGetValue(out string? rc)) reasoning = rc;
        else if (content.Contains("</think>"))
        {
            reasoning = content.Split("</think>")[0].TrimEnd('\n').Split("<think>")[^1].TrimStart('\n');
            content = content.Split("</think>")[^1].TrimStart('\n');
        }
        int lastQuery = Enumerable.Range(0, messages.Count).Last(i => messages[i].Role == "user");
        bool last = index == messages.Count - 1;
        return index > lastQuery && (last || reasoning.Length > 0)
            ? "<think>\n" + reasoning.Trim('\n') + "\n</think>\n\n" + content.TrimStart('\n')
            : content;
    }

    private static IEnumerable<int> Ints(JsonNode? array) => array!.AsArray().Select(n => (int)n!);

    private static int Utf16(string text, int codePoints)
    {
        int i = 0;
        for (int n = 0; n < codePoints; n++) i += char.IsHighSurrogate(text[i]) ? 2 : 1;
        return i;
    }
}
