using System.Text.Json.Nodes;
using ML.Finetune.Chat;
using ML.Finetune.Chat.Jinja;

namespace ML.Finetune.Tests.Chat;

/// <summary>
/// Finding a folder's chat template(s) and special tokens as transformers 5 does. The expected maps and selections
/// are what AutoTokenizer.from_pretrained(...).special_tokens_map / apply_chat_template gave for the same folders
/// (transformers 5.12.1, checked in the sid chroot).
/// </summary>
public sealed class ChatTemplateLoadingTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "mlft-chat-" + Guid.NewGuid().ToString("N"));

    public ChatTemplateLoadingTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Folder(string name, string? config, params (string File, string Text)[] files)
    {
        string folder = Path.Combine(_dir, name);
        Directory.CreateDirectory(folder);
        if (config is not null) File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), config);
        foreach (var (file, text) in files)
        {
            string path = Path.Combine(folder, file);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, text);
        }
        return folder;
    }

    private static readonly IReadOnlyList<ChatMessage> s_hello = new[] { ChatMessage.User("x") };

    [Fact]
    public void SpecialTokensAreTheNamedOnesAndModelSpecificStringTokens()
    {
        var t = ChatTemplate.FromFolder(Folder("a",
            "{\"tokenizer_class\": \"PreTrainedTokenizerFast\", \"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<s>\", \"lstrip\": false}, " +
            "\"eos_token\": \"</s>\", \"image_token\": \"<img>\", \"add_bos_token\": true, \"pad_token\": null, \"chat_template\": \"{{ bos_token }}{{ image_token }}{{ eos_token }}\"}"));
        Assert.Equal(new Dictionary<string, string> { ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["image_token"] = "<img>" }, t.SpecialTokens);
        Assert.Equal("<s><img></s>", t.Render(s_hello));
        Assert.Equal("<s>", t.BosToken);
        Assert.EndsWith("tokenizer_config.json", t.SourceFile);
    }

    [Fact]
    public void JinjaFilesTakePriorityOverTheConfigAndAddNamedTemplates()
    {
        var t = ChatTemplate.FromFolder(Folder("b", "{\"eos_token\": \"</s>\", \"chat_template\": \"cfg\"}",
            ("chat_template.jinja", "file {{ eos_token }}\n"), ("additional_chat_templates/tool_use.jinja", "tools {{ tools|length }}")));
        Assert.Equal(new[] { "default", "tool_use" }, t.TemplateNames.OrderBy(n => n));
        Assert.Equal("file </s>", t.Render(s_hello));
        Assert.Equal("tools 1", t.Render(s_hello, options: new ChatTemplateOptions { Tools = new[] { JsonNode.Parse("{\"a\": 1}")! } }));
        Assert.Equal("file {{ eos_token }}\n", t.GetSource());
    }

    [Fact]
    public void ListFormChoosesToolUseWhenToolsArePassedAndSpecialTokensMapOverridesWithoutAddedTokensDecoder()
    {
        var t = ChatTemplate.FromFolder(Folder("c",
            "{\"eos_token\": \"</s>\", \"chat_template\": [{\"name\": \"default\", \"template\": \"D{{ eos_token }}\"}, {\"name\": \"tool_use\", \"template\": \"T\"}]}",
            ("special_tokens_map.json", "{\"eos_token\": {\"content\": \"<pad>\"}, \"bos_token\": \"<s>\", \"mask_token\": null}")));
        Assert.Equal(new Dictionary<string, string> { ["bos_token"] = "<s>", ["eos_token"] = "<pad>" }, t.SpecialTokens);
        Assert.Equal("D<pad>", t.Render(s_hello));
        Assert.Equal("T", t.Render(s_hello, options: new ChatTemplateOptions { Tools = new[] { JsonNode.Parse("{\"a\": 1}")! } }));
        Assert.Equal("T", t.Render(s_hello, options: new ChatTemplateOptions { TemplateName = "tool_use" }));
        var e = Assert.Throws<ArgumentException>(() => t.Render(s_hello, options: new ChatTemplateOptions { TemplateName = "rag" }));
        Assert.Contains("Available: default, tool_use", e.Message);
    }

    [Fact]
    public void SpecialTokensMapIsIgnoredWhenTheConfigHasAddedTokensDecoderAndExtraSpecialTokensAreNamed()
    {
        var d = ChatTemplate.FromFolder(Folder("d", "{\"eos_token\": \"</s>\", \"added_tokens_decoder\": {}, \"chat_template\": \"x\"}",
            ("special_tokens_map.json", "{\"eos_token\": \"<pad>\", \"bos_token\": \"<s>\"}")));
        Assert.Equal(new Dictionary<string, string> { ["eos_token"] = "</s>" }, d.SpecialTokens);
        var e = ChatTemplate.FromFolder(Folder("e", "{\"eos_token\": \"</s>\", \"extra_special_tokens\": {\"boi_token\": \"<img>\"}, \"chat_template\": \"x\"}"));
        Assert.Equal(new Dictionary<string, string> { ["eos_token"] = "</s>", ["boi_token"] = "<img>" }, e.SpecialTokens);
    }

    [Fact]
    public void SeveralTemplatesWithoutADefaultMustBeNamed()
    {
        var t = ChatTemplate.FromFolder(Folder("f", "{\"chat_template\": [{\"name\": \"rag\", \"template\": \"R\"}, {\"name\": \"tool_use\", \"template\": \"T\"}]}"));
        var e = Assert.Throws<InvalidOperationException>(() => t.Render(s_hello));
        Assert.Contains("none is named 'default'", e.Message);
        Assert.Equal("R", t.Render(s_hello, options: new ChatTemplateOptions { TemplateName = "rag" }));
    }

    [Fact]
    public void MissingOrBrokenTemplatesFailClearly()
    {
        string none = Folder("g", "{\"eos_token\": \"</s>\"}");
        Assert.False(ChatTemplate.FolderHasTemplate(none));
        var missing = Assert.Throws<FileNotFoundException>(() => ChatTemplate.FromFolder(none));
        Assert.Contains("chat_template.jinja", missing.Message);
        Assert.Contains("tokenizer_config.json", missing.Message);

        var broken = Assert.Throws<JinjaSyntaxException>(() => ChatTemplate.FromFolder(Folder("h", null, ("chat_template.jinja", "ok\n{% for m in messages %}"))));
        Assert.Contains("chat_template.jinja", broken.Message);
        Assert.Contains("endfor", broken.Message);

        var badList = Assert.Throws<InvalidDataException>(() => ChatTemplate.FromFolder(Folder("i", "{\"chat_template\": [{\"name\": \"a\"}]}")));
        Assert.Contains("chat_template[0].template", badList.Message);
        Assert.Throws<DirectoryNotFoundException>(() => ChatTemplate.FromFolder(Path.Combine(_dir, "nope")));
    }

    [Fact]
    public void RendererVariablesCannotBeOverridden()
    {
        var t = new ChatTemplate("{{ messages|length }}{{ custom }}{{ eos_token }}", new Dictionary<string, string> { ["eos_token"] = "</s>" });
        Assert.Equal("1yes</s>", t.Render(s_hello, options: new ChatTemplateOptions { Variables = new Dictionary<string, object?> { ["custom"] = "yes" } }));
        Assert.Equal("1yesEOS", t.Render(s_hello, options: new ChatTemplateOptions { Variables = new Dictionary<string, object?> { ["custom"] = "yes", ["eos_token"] = "EOS" } }));
        var e = Assert.Throws<ArgumentException>(() => t.Render(s_hello, options: new ChatTemplateOptions { Variables = new Dictionary<string, object?> { ["messages"] = "x" } }));
        Assert.Contains("'messages'", e.Message);
    }
}
