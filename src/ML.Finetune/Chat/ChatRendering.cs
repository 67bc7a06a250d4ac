namespace ML.Finetune.Chat;

/// <summary>Where an assistant message's trained text lies in a rendering: characters [<see cref="Start"/>, <see cref="End"/>) of <see cref="ChatRendering.Text"/>, counted in UTF-16 units like .NET string indices.</summary>
/// <param name="MessageIndex">Index of the assistant message, or -1 when a template's generation blocks cannot be matched to messages one to one.</param>
public readonly record struct AssistantSpan(int MessageIndex, int Start, int End)
{
    public int Length => End - Start;
}

/// <summary>A rendered conversation and the character spans of its assistant messages.</summary>
public sealed record ChatRendering(string Text, IReadOnlyList<AssistantSpan> AssistantSpans, AssistantSpanMethod Method);

/// <summary>How <see cref="ChatRendering.AssistantSpans"/> were found.</summary>
public enum AssistantSpanMethod
{
    /// <summary>The template's <c>{% generation %}</c> blocks, exactly as transformers' <c>return_assistant_tokens_mask</c>.</summary>
    GenerationBlocks,

    /// <summary>
    /// Rendering prefixes of the conversation: an assistant message's text starts where the rendering of the
    /// preceding messages with <c>add_generation_prompt=True</c> stops matching the full rendering, and ends where
    /// the rendering up to and including the message stops matching it, without trailing whitespace: the
    /// message's content plus its end-of-turn token. Where a template renders a message differently once more
    /// messages follow, renderings with a marker added to the content locate it instead; what cannot be located
    /// consistently throws (see docs/chat-templates.md).
    /// </summary>
    PrefixDiff,
}
