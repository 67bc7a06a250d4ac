using Microsoft.ML;
using ML.Finetune.Chat;
using ML.Finetune.Data;
using ML.Finetune.Estimators;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;

namespace ML.Finetune.Tests.Chat;

/// <summary>
/// The three data formats below the estimator: which format a schema holds (and the errors when it is ambiguous or
/// missing), conversations encoded with assistant-only labels (content + end-of-turn token, checked by decoding), every
/// token, the over-long and no-assistant errors naming the row, the vector-of-Text form of a messages column, and plain
/// text with HF's special tokens, a final eos and overlapping windows that train every token once.
/// </summary>
public class DataFormatTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("mlft-formats").FullName;
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static readonly DataColumnNames Names = new("Prompt", "Completion", "Messages", "Text");

    sealed class PcRow { public string Prompt { get; set; } = ""; public string Completion { get; set; } = ""; }
    sealed class ConvRow { public string Messages { get; set; } = ""; }
    sealed class VecRow { public string[] Messages { get; set; } = []; }
    sealed class TextRow { public string Text { get; set; } = ""; }
    sealed class MixedRow { public string Prompt { get; set; } = ""; public string Completion { get; set; } = ""; public string Text { get; set; } = ""; }
    sealed class PromptOnlyRow { public string Prompt { get; set; } = ""; }
    sealed class OtherRow { public float Number { get; set; } }

    static FinetuneDataFormat Detect<T>(MLContext ml, T row) where T : class =>
        DataFormatColumns.ForTraining(ml.Data.LoadFromEnumerable(new[] { row }).Schema, Names, FinetuneDataFormat.Auto, "training data").Format;

    [Fact]
    public void Format_IsDetectedFromTheColumns_AndAmbiguousOrMissingColumnsAreNamed()
    {
        var ml = new MLContext(1);
        Assert.Equal(FinetuneDataFormat.PromptCompletion, Detect(ml, new PcRow()));
        Assert.Equal(FinetuneDataFormat.Conversation, Detect(ml, new ConvRow()));
        Assert.Equal(FinetuneDataFormat.Conversation, Detect(ml, new VecRow()));
        Assert.Equal(FinetuneDataFormat.Text, Detect(ml, new TextRow()));
        var ambiguous = Assert.Throws<ArgumentException>(() => Detect(ml, new MixedRow()));
        Assert.Contains("PromptCompletion: 'Prompt' + 'Completion'; Text: 'Text'", ambiguous.Message);
        Assert.Contains("DataFormat", ambiguous.Message);
        var half = Assert.Throws<ArgumentOutOfRangeException>(() => Detect(ml, new PromptOnlyRow()));
        Assert.Contains("no completion column 'Completion'", half.Message);
        var none = Assert.Throws<ArgumentOutOfRangeException>(() => Detect(ml, new OtherRow()));
        Assert.Contains("'Messages' (conversations)", none.Message);
        Assert.Contains("Columns present: Number", none.Message);
        // A named format is checked, not guessed: the mixed rows train as prompt/completion when asked to.
        var schema = ml.Data.LoadFromEnumerable(new[] { new MixedRow() }).Schema;
        Assert.Equal(FinetuneDataFormat.PromptCompletion, DataFormatColumns.ForTraining(schema, Names, FinetuneDataFormat.PromptCompletion, "x").Format);
        var wrong = Assert.Throws<ArgumentOutOfRangeException>(() => DataFormatColumns.ForTraining(schema, Names, FinetuneDataFormat.Conversation, "training data"));
        Assert.Contains("The messages column 'Messages' was not found in the training data", wrong.Message);
    }

    ConversationEncoder Encoder(bool assistantOnly = true, int max = 128)
    {
        string folder = TinyChatModel.Create(Path.Combine(_dir, "chat"));
        return new ConversationEncoder(CausalLMTokenizer.FromFolder(folder), ChatTemplate.FromFolder(folder), max, assistantOnly);
    }

    static string Trained(CausalLMTokenizer tokenizer, EncodedExample e) =>
        tokenizer.Decode(e.Labels.Where(l => l != FinetuneObjective.IgnoreIndex).Select(l => (int)l), skipSpecial: false);

    [Fact]
    public void Conversation_TrainsTheAssistantContentAndItsEndOfTurn_OrEveryToken()
    {
        var encoder = Encoder();
        var messages = ChatConversation.Parse("""
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
             {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Italy?"}, {"role": "assistant", "content": "Rome."}]
            """);
        var e = encoder.Encode(messages);
        string text = encoder.Template.Render(messages);
        Assert.Equal(text, encoder.Tokenizer.Decode(e.InputIds.Select(i => (int)i), skipSpecial: false)); // the template's rendering, no added tokens
        Assert.Equal("Paris.<|im_end|>Rome.<|im_end|>", Trained(encoder.Tokenizer, e));
        var all = Encoder(assistantOnly: false).Encode(messages);
        Assert.Equal(e.InputIds, all.InputIds);
        Assert.Equal(all.InputIds, all.Labels);
        // Scoring labels the final assistant message only; generation renders the messages before it with the generation prompt.
        Assert.Equal("Rome.<|im_end|>", Trained(encoder.Tokenizer, encoder.EncodeLastReply(messages)));
        var prompt = encoder.EncodeForGeneration(messages, 128);
        Assert.Equal(encoder.Template.Render(messages.Take(4).ToList(), addGenerationPrompt: true),
            encoder.Tokenizer.Decode(prompt.Select(i => (int)i), skipSpecial: false));
        Assert.EndsWith("<|im_start|>assistant\n", encoder.Tokenizer.Decode(prompt.Select(i => (int)i), skipSpecial: false));
    }

    [Fact]
    public void Conversation_TooLongOrWithoutAnAssistantMessage_IsAnErrorNamingTheRow()
    {
        var encoder = Encoder(max: 40);
        var ok = ChatConversation.Parse(TinyChatModel.Json("Hi", "Hello"));
        var longOne = ChatConversation.Parse(TinyChatModel.Json(string.Join(" ", Enumerable.Repeat("word", 60)), "Hello"));
        string where = FinetuneRows.Where(6, "Messages");
        var tooLong = Assert.Throws<ArgumentException>(() => encoder.Encode(longOne, where));
        Assert.StartsWith("row 7 (counting from 1), column 'Messages': the conversation is ", tooLong.Message);
        Assert.Contains("more than MaxSequenceLength 40", tooLong.Message);
        Assert.Contains("never cut", tooLong.Message);
        var noReply = Assert.Throws<ArgumentException>(() => encoder.Encode(ChatConversation.Parse(TinyChatModel.Json("Hi", null)), where));
        Assert.Contains("row 7 (counting from 1), column 'Messages': the conversation has no assistant message to train on (roles: user)", noReply.Message);
        Assert.True(encoder.Encode(ok).Length <= 40);
    }

    [Fact]
    public void MessagesAsAVectorOfText_EqualTheJsonColumn()
    {
        var ml = new MLContext(1);
        var json = ml.Data.LoadFromEnumerable(new[] { new ConvRow { Messages = """[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]""" } });
        var vector = ml.Data.LoadFromEnumerable(new[] { new VecRow { Messages = ["user", "Hi", "assistant", "Hello"] } });
        var a = FinetuneRows.Read(json, new DataColumns(FinetuneDataFormat.Conversation, Names)).Single().Messages!;
        var b = FinetuneRows.Read(vector, new DataColumns(FinetuneDataFormat.Conversation, Names)).Single().Messages!;
        Assert.Equal(ChatConversation.ToJson(a), ChatConversation.ToJson(b));
        var odd = ml.Data.LoadFromEnumerable(new[] { new VecRow { Messages = ["user", "Hi", "assistant"] } });
        var e = Assert.Throws<FormatException>(() => FinetuneRows.Read(odd, new DataColumns(FinetuneDataFormat.Conversation, Names)).ToList());
        Assert.Equal("row 1 (counting from 1), column 'Messages': a vector of Text holds a conversation as role, content, role, content, ...; it has 3 items, an odd number.", e.Message);
        var bad = ml.Data.LoadFromEnumerable(new[] { new ConvRow { Messages = """[{"role":"user"},{"content":"x"}]""" } });
        var missingRole = Assert.Throws<FormatException>(() => FinetuneRows.Read(bad, new DataColumns(FinetuneDataFormat.Conversation, Names)).ToList());
        Assert.StartsWith("row 1 (counting from 1), column 'Messages': $[1]: field 'role' is missing", missingRole.Message);
    }

    [Fact]
    public void PlainText_HasTheTokenizersSpecialTokensAndAnEos_AndLongTextsSplitIntoWindowsThatTrainEveryTokenOnce()
    {
        // Llama 3.1's post-processor adds bos, GPT-2's nothing; both get an eos, as TRL appends one to language-modelling text.
        var llama = CausalLMTokenizer.FromFolder(Tokenization.TokenizerFixtures.Folder("llama3.1"));
        var gpt2 = CausalLMTokenizer.FromFolder(Tokenization.TokenizerFixtures.Folder("gpt2"));
        var text = "The quick brown fox jumps over the lazy dog.";
        var ids = new TextEncoder(llama, 512).Ids(text);
        Assert.Equal(128000, ids[0]); // <|begin_of_text|>
        Assert.Equal(llama.EncodeToIds(text, addSpecialTokens: true).Select(i => (long)i).Append(llama.EosId!.Value), ids);
        Assert.Equal(gpt2.EncodeToIds(text, addSpecialTokens: false).Select(i => (long)i).Append(50256), new TextEncoder(gpt2, 512).Ids(text));
        // A text that already ends with eos gets no second one.
        Assert.Equal(1, new TextEncoder(gpt2, 512).Ids(text + "<|endoftext|>").Count(i => i == 50256));

        var encoder = new TextEncoder(llama, 5);
        var windows = encoder.Encode(text);
        Assert.True(windows.Count > 2);
        Assert.All(windows, w => Assert.True(w.Length <= 5));
        // Window k starts with the last token of window k−1; the targets (positions ≥ 1) cover every token after the first once.
        var targets = windows.SelectMany(w => w.Labels.Skip(1)).ToArray();
        Assert.Equal(ids.Skip(1), targets);
        Assert.Equal(ids.Length - 1, FinetuneObjective.CountTargets(windows));
        for (int k = 1; k < windows.Count; k++) Assert.Equal(windows[k - 1].InputIds[^1], windows[k].InputIds[0]);
    }
}

/// <summary>
/// Where chat generation stops: <see cref="ChatTemplate.EndOfTurnTokenIds"/> finds the token each of the 12 real templates
/// ends an assistant turn with (tokenized by the tiny chat tokenizer, which has every control token as a special token).
/// </summary>
public class EndOfTurnTests
{
    [Theory]
    [InlineData("llama-3.1-instruct", "<|eot_id|>")]
    [InlineData("llama-3.2-instruct", "<|eot_id|>")]
    [InlineData("qwen2.5-instruct", "<|im_end|>")]
    [InlineData("qwen3", "<|im_end|>")]
    [InlineData("smollm2-instruct", "<|im_end|>")]
    [InlineData("deepseek-r1-distill-qwen", "<｜end▁of▁sentence｜>")]
    [InlineData("mistral-7b-instruct-v0.3", "</s>")]
    [InlineData("phi-3-mini-4k-instruct", "<|end|>")]
    [InlineData("phi-3.5-mini-instruct", "<|end|>")]
    [InlineData("phi-4-mini-instruct", "<|end|>")]
    [InlineData("gemma-2-it", "<end_of_turn>")]
    [InlineData("gemma-3-it", "<end_of_turn>")]
    public void EachTemplatesEndOfTurnToken_IsFound(string template, string expected)
    {
        string chat = Path.Combine(AppContext.BaseDirectory, "Chat", "Fixtures");
        var tokenizer = CausalLMTokenizer.FromFolder(Path.Combine(chat, "tiny-chat-tokenizer"));
        var ids = ChatTemplate.FromFolder(Path.Combine(chat, "templates", template)).EndOfTurnTokenIds(tokenizer);
        Assert.Equal([expected], ids.Select(i => tokenizer.Decode([i], skipSpecial: false)));
    }

    [Fact]
    public void A_template_that_ends_turns_with_plain_text_has_no_end_of_turn_token()
    {
        var tokenizer = CausalLMTokenizer.FromFolder(Path.Combine(AppContext.BaseDirectory, "Chat", "Fixtures", "tiny-chat-tokenizer"));
        var plain = new ChatTemplate("{% for m in messages %}{{ m.role }}: {{ m.content }}\n\n{% endfor %}");
        Assert.Empty(plain.EndOfTurnTokenIds(tokenizer));
    }
}
