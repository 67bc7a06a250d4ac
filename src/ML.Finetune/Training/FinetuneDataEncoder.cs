using ML.Finetune.Chat;
using ML.Finetune.Data;
using ML.Finetune.Estimators;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Training;

/// <summary>
/// Turns rows of any data format into token ids, in one place for training (Fit), scoring and generation (the fitted
/// transformer): prompt/completion through <see cref="ExampleEncoder"/>, conversations through
/// <see cref="ConversationEncoder"/> (needs a chat template), plain text through <see cref="TextEncoder"/>.
/// </summary>
public sealed class FinetuneDataEncoder
{
    readonly ConversationEncoder? _conversation;

    public FinetuneDataEncoder(CausalLMTokenizer tokenizer, int maxSequenceLength, ChatTemplate? template = null, bool assistantOnlyLoss = true,
        ChatTemplateOptions? templateOptions = null)
    {
        PromptCompletion = new ExampleEncoder(tokenizer, maxSequenceLength);
        Text = new TextEncoder(tokenizer, maxSequenceLength);
        Template = template;
        if (template is not null) _conversation = new ConversationEncoder(tokenizer, template, maxSequenceLength, assistantOnlyLoss, templateOptions);
    }

    public ExampleEncoder PromptCompletion { get; }
    public TextEncoder Text { get; }
    public ChatTemplate? Template { get; }
    public CausalLMTokenizer Tokenizer => PromptCompletion.Tokenizer;
    public int MaxSequenceLength => PromptCompletion.MaxSequenceLength;
    /// <summary>Pad id of batches (see <see cref="ExampleEncoder.PadId"/>).</summary>
    public int PadId => PromptCompletion.PadId;

    /// <summary>The conversation encoder; throws when there is no chat template.</summary>
    public ConversationEncoder Conversation => _conversation ?? throw NoTemplate();

    internal static InvalidOperationException NoTemplate() => new(
        "Conversations need a chat template, and the model has none: its folder has neither chat_template.jinja nor a chat_template " +
        "field in tokenizer_config.json. Set the options' ChatTemplate to a Jinja chat template (for example the instruct model's).");

    /// <summary>Training examples of a row: one, or several windows of a long text.</summary>
    public IReadOnlyList<EncodedExample> ForTraining(FinetuneRow row)
    {
        if (row.Messages is { } messages) return [Conversation.Encode(messages, row.Where)];
        if (row.Text is { } text) return Text.Encode(text);
        return [PromptCompletion.Encode(row.Prompt ?? "", row.Completion ?? "", row.Index, row.Column)];
    }

    /// <summary>A KL reference sequence (every position counts): the text, the rendered conversation, or prompt + completion.</summary>
    public long[] ForReference(FinetuneRow row)
    {
        if (row.Messages is { } messages)
        {
            var ids = Tokenizer.EncodeToIds(Conversation.Template.Render(messages, false, Conversation.TemplateOptions), addSpecialTokens: false);
            return Generation.TextGenerator.TruncateLeft(ids.Select(i => (long)i).ToList(), MaxSequenceLength, Tokenizer.BosId);
        }
        if (row.Text is { } text) return PromptCompletion.EncodePrompt(text);
        return PromptCompletion.Encode(row.Prompt ?? "", row.Completion ?? "", row.Index, row.Column).InputIds;
    }
}
