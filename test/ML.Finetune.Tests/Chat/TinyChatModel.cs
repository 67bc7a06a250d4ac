using System.Text.Json.Nodes;

namespace ML.Finetune.Tests.Chat;

/// <summary>
/// A tiny chat model folder built at test time from committed fixtures: the tiny-llama weights (vocab 1,000), the
/// 700-token byte-level tokenizer trained on the chat references (every control token special), and a real chat
/// template with its special tokens (Qwen2.5-Instruct by default: turns end with &lt;|im_end|&gt;, id 1).
/// <para>Instruct style: config.json and generation_config.json name &lt;|im_end|&gt; as eos (generation_config a list
/// with &lt;|endoftext|&gt;, as Qwen2.5-Instruct's). Base style (<paramref name="instruct"/> false): eos is
/// &lt;|endoftext|&gt; everywhere, as in a base model that is finetuned on conversations, so only the template's
/// end-of-turn token can stop a reply.</para>
/// </summary>
internal static class TinyChatModel
{
    public const int ImEnd = 1, EndOfText = 2;

    public static string Create(string folder, string template = "qwen2.5-instruct", bool instruct = true)
    {
        Directory.CreateDirectory(folder);
        string llama = Fixtures.Model("tiny-llama");
        File.Copy(Path.Combine(llama, "model.safetensors"), Path.Combine(folder, "model.safetensors"), overwrite: true);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(llama, "config.json")))!.AsObject();
        int eos = instruct ? ImEnd : EndOfText;
        config["eos_token_id"] = eos;
        config["bos_token_id"] = null;
        config["pad_token_id"] = EndOfText;
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        var generation = new JsonObject { ["eos_token_id"] = instruct ? new JsonArray(ImEnd, EndOfText) : EndOfText, ["pad_token_id"] = EndOfText };
        File.WriteAllText(Path.Combine(folder, "generation_config.json"), generation.ToJsonString());
        string chat = Path.Combine(AppContext.BaseDirectory, "Chat", "Fixtures");
        File.Copy(Path.Combine(chat, "tiny-chat-tokenizer", "tokenizer.json"), Path.Combine(folder, "tokenizer.json"), overwrite: true);
        var tokenizerConfig = JsonNode.Parse(File.ReadAllText(Path.Combine(chat, "templates", template, "tokenizer_config.json")))!.AsObject();
        tokenizerConfig["eos_token"] = instruct ? "<|im_end|>" : "<|endoftext|>";
        tokenizerConfig["pad_token"] = "<|endoftext|>";
        tokenizerConfig.Remove("bos_token");
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), tokenizerConfig.ToJsonString());
        return folder;
    }

    /// <summary>Four short conversations with fixed replies: a model finetuned on them answers each prompt with its reply.</summary>
    public static readonly (string User, string Assistant)[] Exchanges =
    [
        ("What is the capital of France?", "Paris."),
        ("Say hello.", "Hello there!"),
        ("What is 2+2?", "4"),
        ("Name a colour.", "Blue."),
    ];

    public static string Json(string user, string? assistant) =>
        Finetune.Chat.ChatConversation.ToJson(assistant is null
            ? [Finetune.Chat.ChatMessage.User(user)]
            : [Finetune.Chat.ChatMessage.User(user), Finetune.Chat.ChatMessage.Assistant(assistant)]);
}
