using System.Text.Json.Nodes;
using ML.Finetune.Chat;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Tests.Chat;

/// <summary>How rendered conversations become ids: as transformers does it (add_special_tokens=False), or refused.</summary>
public sealed class ChatTokenizationTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "mlft-chattok-" + Guid.NewGuid().ToString("N"));

    public ChatTokenizationTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly IReadOnlyList<ChatMessage> s_chat = new[] { ChatMessage.User("Hi there"), ChatMessage.Assistant("Hello") };

    [Fact]
    public void TheTemplatesBosIsTheOnlyBosEvenWhenTheTokenizerAddsOne()
    {
        // A tokenizer configured to prepend BOS (add_bos_token) must not add a second one: the template writes it.
        foreach (var f in Directory.EnumerateFiles(ChatFixtures.Path_("tiny-chat-tokenizer"))) File.Copy(f, Path.Combine(_dir, Path.GetFileName(f)));
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), "{\"bos_token\": \"<|begin_of_text|>\", \"add_bos_token\": true, \"unk_token\": \"<unk>\"}");
        var tokenizer = CausalLMTokenizer.FromFolder(_dir);
        Assert.True(tokenizer.AddBosToken);
        var template = ChatTemplate.FromFolder(ChatFixtures.Path_("templates", "llama-3.1-instruct"));
        var result = template.Tokenize(tokenizer, s_chat, new ChatTemplateOptions { Now = ChatFixtures.Now });
        int bos = tokenizer.BosId!.Value;
        Assert.Equal(bos, result.Ids[0]);
        Assert.Equal(1, result.Ids.Count(id => id == bos));
        Assert.Equal(result.Ids.Count, result.TokenOffsets.Count);
        Assert.Equal("<|begin_of_text|>", result.Rendering.Text[result.TokenOffsets[0].Start..result.TokenOffsets[0].End]);
    }

    [Fact]
    public void ANormalizingTokenizerJsonMasksByOffsetsIntoTheOriginalText()
    {
        // A Lowercase normalizer changes the text the model splits, but HF tokenizer files report offsets into the
        // original string (offset_mapping), so the assistant span still selects exactly the reply's tokens.
        TokenizerFileWriter.WriteWordLevelTokenizerJson(_dir, new[] { "hi", "there", "hello", "<|im_start|>user", "<|im_start|>assistant" }, "<unk>",
            eosToken: "<|im_end|>");
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "tokenizer.json")))!;
        json["normalizer"] = JsonNode.Parse("{\"type\": \"Lowercase\"}");
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), json.ToJsonString());
        var tokenizer = CausalLMTokenizer.FromFolder(_dir);
        var template = ChatTemplate.FromFolder(ChatFixtures.Path_("templates", "qwen2.5-instruct"));
        var result = template.Tokenize(tokenizer, s_chat);
        string text = result.Rendering.Text;
        int helloId = tokenizer.TokenToId("hello")!.Value, hiId = tokenizer.TokenToId("hi")!.Value;
        int hello = result.Ids.ToList().IndexOf(helloId), hi = result.Ids.ToList().IndexOf(hiId);
        Assert.True(hello >= 0 && hi >= 0, "the lowercased words are in the encoding");
        Assert.Equal("Hello", text[result.TokenOffsets[hello].Start..result.TokenOffsets[hello].End]);
        Assert.Equal("Hi", text[result.TokenOffsets[hi].Start..result.TokenOffsets[hi].End]);
        Assert.True(result.TrainedMask[hello]);
        Assert.False(result.TrainedMask[hi]);
        var span = Assert.Single(result.Rendering.AssistantSpans);
        for (int t = 0; t < result.Ids.Count; t++)
            Assert.Equal(result.TokenOffsets[t].Start < span.End && result.TokenOffsets[t].End > span.Start, result.TrainedMask[t]);
    }
}
