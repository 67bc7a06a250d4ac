using System.CommandLine;
using ML.Finetune.Chat;
using ML.Finetune.Estimators;
using ML.Finetune.Models;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;

namespace ML.Finetune.Samples.Cli;

/// <summary>Checks of prompt/completion files before any training, so errors name the file and its 1-based line.</summary>
internal static class DataChecks
{
    /// <summary>--max-length, or the model's context when absent; a larger value is capped at the context with a warning.</summary>
    public static int MaxLength(ParseResult a, CausalLMConfig config)
    {
        int context = config.MaxPositionEmbeddings;
        if (a.GetValue<int?>("--max-length") is not int n) return context;
        if (n > context) Commands.Warn(a, $"--max-length {n} is beyond the model's context of {context} tokens; using {context}");
        return Math.Min(n, context);
    }

    /// <summary>
    /// Checks every example of <paramref name="file"/> the way Fit will encode it, so a problem names the file and its line
    /// before any training: completions (+ eos) must fit next to a prompt token, conversations must render with the chat
    /// template, fit whole and (by default) hold an assistant message; texts are split into windows and need no check.
    /// </summary>
    public static void Fits(TrainingDataFile file, CausalLMTokenizer tokenizer, ChatTemplate? template, int maxLength, int context,
        bool assistantOnly = true, string? lengthOption = "--max-length")
    {
        switch (file.Format)
        {
            case FinetuneDataFormat.PromptCompletion:
                CompletionsFit(file.Lines.Select(l => new PromptCompletionLine(new QaPair(l.Prompt!, l.Completion!), l.Line)).ToList(), file.Path,
                    tokenizer, maxLength, context, lengthOption);
                break;
            case FinetuneDataFormat.Conversation:
                if (template is null)
                    throw new InvalidDataException($"{file.Path} holds conversations, but the model has no chat template (neither chat_template.jinja " +
                                                   "nor a chat_template field in tokenizer_config.json); use an instruct model's folder or add its template");
                var encoder = new ConversationEncoder(tokenizer, template, maxLength, assistantOnly,
                    lengthSetting: lengthOption ?? "the model's maximum length", everyTokenSetting: "--all-tokens");
                foreach (var line in file.Lines)
                {
                    try { encoder.Encode(line.Messages!, $"{file.Path}:{line.Line}"); }
                    catch (ArgumentException e) { throw new InvalidDataException(e.Message, e); }
                }
                break;
        }
    }

    /// <summary>
    /// Every completion (+ eos) must fit next to at least one prompt token (completions are never truncated; prompts are
    /// cut from the left). The rule is the library's <see cref="ExampleEncoder.Encode"/>; this maps its row to the file line.
    /// </summary>
    public static void CompletionsFit(IReadOnlyList<PromptCompletionLine> rows, string path, CausalLMTokenizer tokenizer, int maxLength, int context,
        string? lengthOption = "--max-length")
    {
        var encoder = new ExampleEncoder(tokenizer, maxLength);
        foreach (var row in rows)
        {
            try { encoder.Encode(row.Pair.Prompt, row.Pair.Completion); }
            catch (ArgumentException)
            {
                int n = encoder.EncodeCompletion(row.Pair.Completion).Length - 1;
                string limit = lengthOption == null ? $"the model's maximum length of {maxLength} tokens" : $"{lengthOption} {maxLength}";
                string fix = lengthOption != null && maxLength < context
                    ? $"raise {lengthOption} (up to the model's context of {context}) or shorten the completion"
                    : $"shorten the completion (the model's context is {context} tokens; completions are never truncated)";
                throw new InvalidDataException($"{path}:{row.Line}: the completion has {n} tokens (+ eos), which with the prompt does not fit {limit}; {fix}");
            }
        }
    }
}
