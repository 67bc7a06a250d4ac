using System.CommandLine;
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
