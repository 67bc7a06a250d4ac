using ML.Finetune.Chat.Jinja;

namespace ML.Finetune.Chat;

/// <summary>
/// Finds the assistant messages' text in a rendered conversation by rendering variations of it (for templates without
/// <c>{% generation %}</c> blocks). With F the full rendering and render(k, prompt) the rendering of the first k
/// messages, assistant message i covers:
/// <list type="bullet">
/// <item>from where render(i, prompt: true) stops matching F: the generation prompt (the assistant header) is not
/// trained, what the model writes after it is;</item>
/// <item>to where render(i + 1, prompt: false) stops matching F, or stops matching render(i + 1, prompt: true) if that
/// is earlier (a template may write something after the last message only, as Phi-3/4 write an EOS), less trailing
/// whitespace (the newline between turns is not trained).</item>
/// </list>
/// Control tokens are atomic: a boundary inside one (&lt;|user|&gt; and &lt;|endoftext|&gt; share "&lt;|") moves back
/// to its start. Some templates render a message differently once more messages follow (Qwen3 drops the reasoning
/// of turns before the last user message); the message's content is then located by rendering F again with a marker
/// appended to (or, for a first message, put before) that content, and the span runs to the end of the control
/// token that follows the content. What cannot be located consistently throws instead of guessing.
/// </summary>
internal static class AssistantSpanFinder
{
    private const string Marker = "\uE000"; // a private-use character no template treats specially

    /// <param name="render">render(messages, add_generation_prompt).</param>
    /// <param name="controlTokens">Strings that tokenize as one token (the tokenizer's special tokens).</param>
    public static IReadOnlyList<AssistantSpan> Find(IReadOnlyList<ChatMessage> messages, string full,
        Func<IReadOnlyList<ChatMessage>, bool, string> render, IReadOnlyCollection<string> controlTokens)
    {
        var cache = new Dictionary<(int, bool), string?>();
        string? Prefix(int count, bool prompt)
        {
            if (!cache.TryGetValue((count, prompt), out var text))
                cache[(count, prompt)] = text = TryRender(messages.Take(count).ToList(), prompt, render);
            return text;
        }

        var spans = new List<AssistantSpan>();
        int previousEnd = 0;
        for (int i = 0; i < messages.Count; i++)
        {
            if (messages[i].Role != "assistant") continue;
            string? content = messages[i].Content;

            // The generation prompt marks where the assistant's text starts, provided it diverges from F only after
            // the messages before it (Mistral v0.3 moves the system prompt to the last user turn, so the earlier
            // turns themselves differ; a first message has no prompt without its preamble).
            int start = -1;
            if (i > 0 && Prefix(i, true) is { } prompt && Prefix(i, false) is { } before)
            {
                int diverges = Snap(CommonPrefix(prompt, full), prompt, full, controlTokens);
                if (diverges >= Snap(CommonPrefix(prompt, before), prompt, before, controlTokens)) start = diverges;
            }
            if (start < 0)
            {
                // Otherwise the text starts where the content does (found by putting a marker before it).
                if (content is null || TryRender(WithContent(messages, i, Marker + content), false, render) is not { } marked
                    || MarkerAt(marked, full) is not { } contentStart)
                    throw Unlocatable(i, "the template renders the conversation before it differently from the whole");
                start = contentStart;
            }

            int end = -1;
            string? through = Prefix(i + 1, false);
            if (through is not null)
            {
                end = Snap(CommonPrefix(through, full), through, full, controlTokens);
                if (Prefix(i + 1, true) is { } continued)
                    end = Math.Min(end, Snap(CommonPrefix(through, continued), through, continued, controlTokens));
                while (end > start && char.IsWhiteSpace(full[end - 1])) end--;
            }
            // A prefix rendering can match F by chance a few characters into different text ("<think>" against
            // "<tool_call>"); an end that is not at a whitespace or control-token boundary is not trusted.
            bool plausible = through is not null && end > start && AtBoundary(full, through, end, controlTokens);

            // Where the content ends in F, from a rendering with a marker appended to the content, when the marker is
            // all that changes (adding content to an empty message can change more, e.g. a newline before tool calls).
            // The span must hold the whole content; if the prefix rendering disagrees, the span ends after the content
            // and the control token that closes the turn.
            string? probe = content is null ? null : TryRender(WithContent(messages, i, content + Marker), false, render);
            if (probe is not null && MarkerAt(probe, full) is { } contentEnd)
            {
                if (!plausible || end < contentEnd) end = contentEnd + ControlTokenAt(full, contentEnd, controlTokens);
            }
            else if (!plausible) throw Unlocatable(i, "the conversation up to it renders it differently from the whole");
            if (start < previousEnd || end <= start) throw Unlocatable(i, $"its text would run from character {start} to {end}");
            spans.Add(new AssistantSpan(i, start, end));
            previousEnd = end;
        }
        return spans;
    }

    private static InvalidOperationException Unlocatable(int index, string why) => new(
        $"Cannot find assistant message {index} in the rendered conversation: {why}; the chat template renders parts of the " +
        "conversation inconsistently with the whole. Use a template with {% generation %} blocks for assistant-only training.");

    private static string? TryRender(IReadOnlyList<ChatMessage> messages, bool prompt, Func<IReadOnlyList<ChatMessage>, bool, string> render)
    {
        try
        {
            return render(messages, prompt);
        }
        catch (JinjaRuntimeException)
        {
            return null; // the template refuses this variation (e.g. no messages at all): no evidence from it
        }
    }

    private static List<ChatMessage> WithContent(IReadOnlyList<ChatMessage> messages, int index, string content)
    {
        var copy = messages.ToList();
        copy[index] = copy[index].With("content", content);
        return copy;
    }

    /// <summary>Where a marked rendering puts the marker, if the marker is all it adds to <paramref name="full"/>.</summary>
    private static int? MarkerAt(string marked, string full)
    {
        int at = CommonPrefix(marked, full);
        bool clean = marked.Length == full.Length + Marker.Length
            && string.CompareOrdinal(marked, at, Marker, 0, Marker.Length) == 0
            && string.CompareOrdinal(full, at, marked, at + Marker.Length, full.Length - at) == 0;
        return clean ? at : null;
    }

    private static int CommonPrefix(string a, string b)
    {
        int n = Math.Min(a.Length, b.Length), i = 0;
        while (i < n && a[i] == b[i]) i++;
        return i;
    }

    private static bool AtBoundary(string full, string other, int at, IReadOnlyCollection<string> controlTokens) =>
        at == 0 || at >= full.Length || char.IsWhiteSpace(full[at - 1]) || char.IsWhiteSpace(full[at])
        || controlTokens.Any(t => Occurs(full, t, at - t.Length) || Occurs(full, t, at) || Occurs(other, t, at));

    private static int ControlTokenAt(string text, int at, IReadOnlyCollection<string> controlTokens) =>
        controlTokens.Where(t => Occurs(text, t, at)).Select(t => t.Length).DefaultIfEmpty(0).Max();

    // Moves `position` back to the start of any control token of `a` or `b` that it would cut in two.
    private static int Snap(int position, string a, string b, IReadOnlyCollection<string> controlTokens)
    {
        bool moved = true;
        while (moved)
        {
            moved = false;
            foreach (var token in controlTokens)
            {
                for (int s = Math.Max(0, position - token.Length + 1); s < position; s++)
                {
                    if (Occurs(a, token, s) || Occurs(b, token, s))
                    {
                        position = s;
                        moved = true;
                        break;
                    }
                }
            }
        }
        return position;
    }

    private static bool Occurs(string text, string token, int at) =>
        at >= 0 && at + token.Length <= text.Length && string.CompareOrdinal(text, at, token, 0, token.Length) == 0;
}
