using ML.Finetune.Chat;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Training;

/// <summary>
/// Conversations for training, scoring and generation, through the model's chat template
/// (<see cref="ChatTemplate.Tokenize"/>: the rendering tokenized as transformers does, without added special tokens,
/// since the template writes them).
/// <list type="bullet">
/// <item>Training (<see cref="Encode"/>): with <see cref="AssistantOnlyLoss"/> (the default, TRL's
/// <c>assistant_only_loss</c>) the labels are the tokens of the assistant messages, each message's content plus its
/// end-of-turn token, and −100 elsewhere; otherwise every token. A conversation longer than
/// <see cref="MaxSequenceLength"/> is an error naming it: it is never cut, since any cut removes trained assistant
/// tokens or the context they answer (the prompt/completion rule "completions are never truncated", applied to every
/// assistant message).</item>
/// <item>Generation (<see cref="EncodeForGeneration"/>): the messages (without a final assistant message) rendered with
/// <c>add_generation_prompt=True</c>, so the model writes the next assistant reply.</item>
/// <item>Scoring (<see cref="EncodeLastReply"/>): a conversation that ends with an assistant message, labelled on that
/// message's tokens only: its log-likelihood given everything before it.</item>
/// </list>
/// </summary>
public sealed class ConversationEncoder
{
    readonly string _lengthSetting, _everyTokenSetting;

    /// <param name="lengthSetting">How errors name the length limit (a host such as the CLI names its own option).</param>
    /// <param name="everyTokenSetting">How errors name the switch to train on every token.</param>
    public ConversationEncoder(CausalLMTokenizer tokenizer, ChatTemplate template, int maxSequenceLength, bool assistantOnlyLoss = true,
        ChatTemplateOptions? templateOptions = null, string lengthSetting = "MaxSequenceLength", string everyTokenSetting = "AssistantOnlyLoss = false")
    {
        _lengthSetting = lengthSetting;
        _everyTokenSetting = everyTokenSetting;
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        Template = template ?? throw new ArgumentNullException(nameof(template));
        if (maxSequenceLength < 2) throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), "MaxSequenceLength must be at least 2.");
        MaxSequenceLength = maxSequenceLength;
        AssistantOnlyLoss = assistantOnlyLoss;
        TemplateOptions = templateOptions;
    }

    public CausalLMTokenizer Tokenizer { get; }
    public ChatTemplate Template { get; }
    public int MaxSequenceLength { get; }
    public bool AssistantOnlyLoss { get; }
    public ChatTemplateOptions? TemplateOptions { get; }

    /// <summary>A conversation as one training example; <paramref name="where"/> names it in errors.</summary>
    public EncodedExample Encode(IReadOnlyList<ChatMessage> messages, string where = "conversation")
    {
        var t = Tokenize(messages, where);
        var ids = t.Ids.Select(i => (long)i).ToArray();
        var labels = ids.Select((id, j) => !AssistantOnlyLoss || t.TrainedMask[j] ? id : FinetuneObjective.IgnoreIndex).ToArray();
        if (AssistantOnlyLoss && !t.TrainedMask.Skip(1).Any(m => m))
            throw new ArgumentException($"{where}: the conversation has no assistant message to train on (roles: " +
                $"{string.Join(", ", messages.Select(m => m.Role))}); only assistant messages are trained by default. " +
                $"Remove it, or set {_everyTokenSetting} to train on every token.");
        CheckLength(ids.Length, where);
        return new EncodedExample(ids, labels);
    }

    /// <summary>
    /// The conversation labelled on its final assistant message only (content and end-of-turn token): Score/ScorePerToken
    /// of a messages row. Throws when the last message is not the assistant's.
    /// </summary>
    public EncodedExample EncodeLastReply(IReadOnlyList<ChatMessage> messages, string where = "conversation")
    {
        if (messages.Count == 0 || messages[^1].Role != "assistant")
            throw new ArgumentException($"{where}: the conversation does not end with an assistant message, so it has no reply to score.");
        var t = Tokenize(messages, where);
        int last = messages.Count - 1;
        var spans = t.Rendering.AssistantSpans.Where(s => s.MessageIndex == last).ToList();
        if (spans.Count == 0 && t.Rendering.AssistantSpans.Count > 0) spans.Add(t.Rendering.AssistantSpans[^1]);
        var ids = t.Ids.Select(i => (long)i).ToArray();
        var labels = ids.Select((id, j) => spans.Any(s => s.Length > 0 && t.TokenOffsets[j].Start < s.End && t.TokenOffsets[j].End > s.Start)
            ? id : FinetuneObjective.IgnoreIndex).ToArray();
        CheckLength(ids.Length, where);
        return new EncodedExample(ids, labels);
    }

    /// <summary>
    /// The prompt of the next assistant reply: the messages (less a final assistant message, which is the reply
    /// being asked for) rendered with the generation prompt, left-truncated to <paramref name="maxLength"/> tokens.
    /// </summary>
    public long[] EncodeForGeneration(IReadOnlyList<ChatMessage> messages, int maxLength, string where = "conversation")
    {
        var context = messages.Count > 0 && messages[^1].Role == "assistant" ? messages.Take(messages.Count - 1).ToList() : messages;
        if (context.Count == 0) throw new ArgumentException($"{where}: there is no message before the assistant's to answer.");
        string text = Template.Render(context, addGenerationPrompt: true, TemplateOptions);
        var ids = Tokenizer.EncodeToIds(text, addSpecialTokens: false).Select(i => (long)i).ToList();
        return Generation.TextGenerator.TruncateLeft(ids, maxLength, Tokenizer.BosId);
    }

    ChatTokenization Tokenize(IReadOnlyList<ChatMessage> messages, string where)
    {
        try { return Template.Tokenize(Tokenizer, messages, TemplateOptions); }
        catch (Exception e) when (e is Chat.Jinja.JinjaException or InvalidOperationException or ArgumentException)
        {
            throw new ArgumentException($"{where}: the chat template cannot render this conversation: {e.Message}", e);
        }
    }

    void CheckLength(int n, string where)
    {
        if (n <= MaxSequenceLength) return;
        throw new ArgumentException($"{where}: the conversation is {n} tokens long with the chat template, more than {_lengthSetting} " +
            $"{MaxSequenceLength} (at most the model's context). Conversations are never cut, since their assistant messages are what " +
            $"trains: shorten or split the conversation, or raise {_lengthSetting} if it is below the model's context.");
    }
}
