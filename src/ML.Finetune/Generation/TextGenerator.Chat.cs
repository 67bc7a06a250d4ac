using ML.Finetune.Chat;
using ML.Finetune.Models;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;

namespace ML.Finetune.Generation;

/// <summary>An assistant reply: its text (special tokens skipped), the new token ids, and whether it ended at an end-of-turn/eos token.</summary>
public sealed record ChatReply(string Text, long[] TokenIds, bool StoppedAtEndOfTurn);

public static partial class TextGenerator
{
    /// <summary>
    /// Where chat generation stops: the model's eos ids (config.json / generation_config.json <c>eos_token_id</c>, a
    /// list for instruct models), the tokenizer's eos, and the template's end-of-turn tokens
    /// (<see cref="ChatTemplate.EndOfTurnTokenIds"/>).
    /// </summary>
    public static IReadOnlyList<long> ChatStopTokenIds(CausalLMConfig config, CausalLMTokenizer tokenizer, ChatTemplate template,
        ChatTemplateOptions? templateOptions = null)
    {
        var ids = new List<long>(config.EosTokenIds);
        if (tokenizer.EosId is int eos) ids.Add(eos);
        ids.AddRange(template.EndOfTurnTokenIds(tokenizer, templateOptions).Select(i => (long)i));
        return ids.Distinct().ToList();
    }

    /// <summary>
    /// The next assistant reply of each conversation: the messages rendered with the chat template and
    /// <c>add_generation_prompt=True</c>, tokenized without added special tokens (the template writes them), then
    /// generated (greedy unless <paramref name="options"/> samples) until an end-of-turn or eos token
    /// (<see cref="ChatStopTokenIds"/> unless the options name their own) or MaxNewTokens. A prompt that leaves no room for
    /// MaxNewTokens (and the method's virtual tokens) in the model's context is cut from the left.
    /// </summary>
    public static IReadOnlyList<ChatReply> GenerateChat(CausalLM model, IFinetuneMethod? method, CausalLMTokenizer tokenizer, ChatTemplate template,
        IReadOnlyList<IReadOnlyList<ChatMessage>> conversations, GenerationOptions? options = null, ChatTemplateOptions? templateOptions = null)
    {
        ArgumentNullException.ThrowIfNull(model); ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(template); ArgumentNullException.ThrowIfNull(conversations);
        options ??= new GenerationOptions();
        var stops = options.EosTokenIds ?? ChatStopTokenIds(model.Config, tokenizer, template, templateOptions);
        options = options with { EosTokenIds = stops, PadTokenId = options.PadTokenId != 0 ? options.PadTokenId : tokenizer.PadId ?? tokenizer.EosId ?? 0 };
        int room = Math.Max(1, model.Config.MaxPositionEmbeddings - options.MaxNewTokens - VirtualTokens(model, method));
        var prompts = conversations.Select((c, i) =>
        {
            if (c.Count == 0) throw new ArgumentException($"conversation {i} has no messages", nameof(conversations));
            var ids = tokenizer.EncodeToIds(template.Render(c, addGenerationPrompt: true, templateOptions), addSpecialTokens: false);
            return TruncateLeft(ids.Select(x => (long)x).ToList(), room, tokenizer.BosId);
        }).ToList();
        var result = method is null ? Generate(model, prompts, options) : Generate(model, method, prompts, options);
        var stopSet = stops.ToHashSet();
        return result.NewTokens.Select(ids => new ChatReply(
            tokenizer.Decode(ids.Where(t => !stopSet.Contains(t)).Select(t => (int)t)), ids, ids.Length > 0 && stopSet.Contains(ids[^1]))).ToList();
    }

    /// <summary>Positions a method's soft prompt and KV prefix take in front of a prompt.</summary>
    public static int VirtualTokens(CausalLM model, IFinetuneMethod? method)
    {
        if (method is null) return 0;
        using var scope = TorchSharp.torch.NewDisposeScope();
        var prefix = method.GetGenerationPrefix(model);
        if (prefix is null) return 0;
        long n = prefix.SoftPrompt?.shape[0] ?? 0;
        if (prefix.PrefixCache != null) using (var cache = prefix.PrefixCache(1)) n += cache.Length;
        return (int)n;
    }
}
