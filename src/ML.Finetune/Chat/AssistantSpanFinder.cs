using ML.Finetune.Chat.Jinja;

namespace ML.Finetune.Chat;

/// <summary>
/// Finds the assistant messages' text in a rendered conversation by rendering prefixes of it (for templates without
/// <c>{% generation %}</c> blocks). With F the full rendering and render(k, prompt) the rendering of the first k
/// messages, assistant message i covers:
/// <list type="bullet">
/// <item>from where render(i, prompt: true) stops matching F: the generation prompt (assistant header) is not trained;</item>
/// <item>to where render(i + 1, prompt: false) stops matching F, or stops matching render(i + 1, prompt: true) if
/// that is earlier: a template may write something after the last message only (Phi-3/4 write an EOS), which
/// belongs to no message; trailing whitespace (the newline between turns) is left out.</item>
/// </list>
/// Control tokens are atomic: a boundary that falls inside one (two different tokens such as "&lt;|user|&gt;" and
/// "&lt;|endoftext|&gt;" share "&lt;|") moves back to its start. The result is the message's content plus its
/// end-of-turn token. A template that renders a message differently depending on what follows it can make these
/// renderings disagree; then this throws rather than guess.
/// </summary>
internal static class AssistantSpanFinder
{
    /// <param name="render">render(number of leading messages, add_generation_prompt).</param>
    /// <param name="controlTokens">Strings that tokenize as one token (the tokenizer's special tokens).</param>
    public static IReadOnlyList<AssistantSpan> Find(IReadOnlyList<ChatMessage> messages, string full, Func<int, bool, string> render,
        IReadOnlyCollection<string> controlTokens)
    {
        var cache = new Dictionary<(int, bool), string?>();
        string? Render(int count, bool prompt, bool optional)
        {
            if (cache.TryGetValue((count, prompt), out var cached)) return cached;
            string? text;
            try
            {
                text = render(count, prompt);
            }
            catch (JinjaRuntimeException) when (optional)
            {
                text = null; // the template refuses this prefix (e.g. a generation prompt after an assistant turn): no evidence from it
            }
            catch (JinjaRuntimeException e)
            {
                throw new InvalidOperationException(
                    $"Cannot find the assistant messages: the chat template fails on the first {count} message(s) with add_generation_prompt={prompt} " +
                    $"({e.Detail}). Use a template with {{% generation %}} blocks for assistant-only training.", e);
            }
            cache[(count, prompt)] = text;
            return text;
        }

        var spans = new List<AssistantSpan>();
        int previousEnd = 0;
        for (int i = 0; i < messages.Count; i++)
        {
            if (messages[i].Role != "assistant") continue;
            string prompt = Render(i, true, optional: false)!;
            string through = Render(i + 1, false, optional: false)!;
            int start = Snap(CommonPrefix(prompt, full), prompt, full, controlTokens);
            int end = Snap(CommonPrefix(through, full), through, full, controlTokens);
            if (Render(i + 1, true, optional: true) is { } continued)
                end = Math.Min(end, Snap(CommonPrefix(through, continued), through, continued, controlTokens));
            while (end > start && char.IsWhiteSpace(full[end - 1])) end--;
            if (start < previousEnd || end <= start)
                throw new InvalidOperationException(
                    $"Cannot find assistant message {i} in the rendered conversation: the chat template renders the conversation's " +
                    $"prefixes inconsistently with the whole (the generation prompt matches up to character {start}, the conversation " +
                    $"through message {i} up to character {end}). Use a template with {{% generation %}} blocks for assistant-only training.");
            spans.Add(new AssistantSpan(i, start, end));
            previousEnd = end;
        }
        return spans;
    }

    private static int CommonPrefix(string a, string b)
    {
        int n = Math.Min(a.Length, b.Length), i = 0;
        while (i < n && a[i] == b[i]) i++;
        return i;
    }

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
        at + token.Length <= text.Length && string.CompareOrdinal(text, at, token, 0, token.Length) == 0;
}
