using System.Text.Json.Nodes;
using ML.Finetune.Chat.Jinja;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Chat;

/// <summary>
/// A model's chat template, rendered exactly as transformers' <c>apply_chat_template</c> renders it (same Jinja
/// semantics, same variables: messages, tools, documents, add_generation_prompt, the tokenizer's special tokens
/// and any extra variables).
/// </summary>
public sealed class ChatTemplate
{
    private static readonly HashSet<string> s_reserved = new(StringComparer.Ordinal) { "messages", "tools", "documents", "add_generation_prompt" };
    private readonly Dictionary<string, JinjaTemplate> _templates;

    /// <summary>A single template with the given special tokens (e.g. <c>bos_token</c>, <c>eos_token</c>).</summary>
    public ChatTemplate(string template, IReadOnlyDictionary<string, string>? specialTokens = null)
        : this(new Dictionary<string, string> { ["default"] = template ?? throw new ArgumentNullException(nameof(template)) }, specialTokens, null)
    {
    }

    /// <summary>Named templates (as a tokenizer_config.json list or additional_chat_templates/ folder defines them).</summary>
    public ChatTemplate(IReadOnlyDictionary<string, string> namedTemplates, IReadOnlyDictionary<string, string>? specialTokens = null)
        : this(namedTemplates, specialTokens, null)
    {
    }

    private ChatTemplate(IReadOnlyDictionary<string, string> namedTemplates, IReadOnlyDictionary<string, string>? specialTokens, string? source)
    {
        ArgumentNullException.ThrowIfNull(namedTemplates);
        if (namedTemplates.Count == 0) throw new ArgumentException("At least one template is needed.", nameof(namedTemplates));
        _templates = new Dictionary<string, JinjaTemplate>(StringComparer.Ordinal);
        foreach (var kv in namedTemplates)
        {
            try
            {
                _templates[kv.Key] = JinjaTemplate.Parse(kv.Value);
            }
            catch (JinjaSyntaxException e) when (source is not null || namedTemplates.Count > 1)
            {
                throw new JinjaSyntaxException($"chat template '{kv.Key}'{(source is null ? "" : $" in '{source}'")}: {e.Detail}", e.Line, e.Column);
            }
        }
        SpecialTokens = new Dictionary<string, string>(specialTokens ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        SourceFile = source;
    }

    /// <summary>
    /// Loads the chat template of a model folder, as transformers does: <c>chat_template.jinja</c> (plus
    /// <c>additional_chat_templates/*.jinja</c>), else the <c>chat_template</c> field of <c>tokenizer_config.json</c>;
    /// special tokens from tokenizer_config.json (and special_tokens_map.json).
    /// </summary>
    public static ChatTemplate FromFolder(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Model folder '{folder}' does not exist.");
        var (templates, source) = ChatTemplateFiles.ReadTemplates(folder);
        return new ChatTemplate(templates, ChatTemplateFiles.ReadSpecialTokens(folder), source);
    }

    /// <summary>Whether <paramref name="folder"/> has a chat template that <see cref="FromFolder"/> would load.</summary>
    public static bool FolderHasTemplate(string folder)
    {
        try
        {
            ChatTemplateFiles.ReadTemplates(folder);
            return true;
        }
        catch (FileNotFoundException)
        {
            return false;
        }
    }

    /// <summary>The special-token variables passed to the template (bos_token, eos_token, ...), as transformers' special_tokens_map.</summary>
    public IReadOnlyDictionary<string, string> SpecialTokens { get; }

    public string? BosToken => SpecialTokens.GetValueOrDefault("bos_token");
    public string? EosToken => SpecialTokens.GetValueOrDefault("eos_token");

    /// <summary>Template names ("default" for a single template).</summary>
    public IReadOnlyCollection<string> TemplateNames => _templates.Keys;

    /// <summary>The file the template came from, when loaded from a folder.</summary>
    public string? SourceFile { get; }

    /// <summary>The Jinja source of a template.</summary>
    public string GetSource(string? name = null) => Select(name, hasTools: false).Source;

    /// <summary>Whether the selected template marks assistant text with <c>{% generation %}</c>.</summary>
    public bool HasGenerationBlocks(string? name = null) => Select(name, hasTools: false).HasGenerationBlocks;

    /// <summary>
    /// Renders <paramref name="messages"/>. With <paramref name="addGenerationPrompt"/> the text ends with the
    /// header that starts the assistant's reply (for generation). Throws <see cref="TemplateRaisedException"/> when
    /// the template rejects the conversation (e.g. roles that do not alternate), <see cref="JinjaNotImplementedException"/>
    /// for a construct this interpreter does not implement.
    /// </summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = false, ChatTemplateOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var template = Select(options?.TemplateName, options?.Tools is not null);
        return template.RenderPython(Variables(messages.Select(m => m.ToPython()).ToList(), addGenerationPrompt, options), options?.Now).Text;
    }

    /// <summary>
    /// Renders a conversation for training (<c>add_generation_prompt=False</c>) and finds the characters of each
    /// assistant message: from the template's <c>{% generation %}</c> blocks when it has them, else by rendering
    /// prefixes of the conversation (see <see cref="AssistantSpanMethod.PrefixDiff"/>).
    /// </summary>
    public ChatRendering RenderForTraining(IReadOnlyList<ChatMessage> messages, ChatTemplateOptions? options = null) =>
        RenderForTraining(messages, options, SpecialTokens.Values);

    /// <param name="controlTokens">Strings that are single tokens (the tokenizer's special tokens); span boundaries never cut one.</param>
    internal ChatRendering RenderForTraining(IReadOnlyList<ChatMessage> messages, ChatTemplateOptions? options, IEnumerable<string> controlTokens)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (messages.Count == 0) throw new ArgumentException("The conversation has no messages.", nameof(messages));
        var template = Select(options?.TemplateName, options?.Tools is not null);
        var python = messages.Select(m => m.ToPython()).ToList();
        var (text, generation) = template.RenderPython(Variables(python, false, options), options?.Now);
        if (template.HasGenerationBlocks)
        {
            var assistants = Enumerable.Range(0, messages.Count).Where(i => messages[i].Role == "assistant").ToList();
            bool oneToOne = assistants.Count == generation.Count;
            var spans = generation.Select((g, k) => new AssistantSpan(oneToOne ? assistants[k] : -1, g.Start, g.End)).ToList();
            return new ChatRendering(text, spans, AssistantSpanMethod.GenerationBlocks);
        }
        return new ChatRendering(text, AssistantSpanFinder.Find(messages, text,
            (variant, addPrompt) => template.RenderPython(Variables(variant.Select(m => m.ToPython()).ToList(), addPrompt, options), options?.Now).Text,
            controlTokens.Where(t => t.Length > 1).Distinct(StringComparer.Ordinal).ToList()),
            AssistantSpanMethod.PrefixDiff);
    }

    /// <summary>
    /// Renders for training and tokenizes the text as transformers does (no special tokens added: the template
    /// writes them), returning the ids and which tokens belong to assistant messages.
    /// </summary>
    public ChatTokenization Tokenize(CausalLMTokenizer tokenizer, IReadOnlyList<ChatMessage> messages, ChatTemplateOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var controlTokens = SpecialTokens.Values.Concat(tokenizer.SpecialIds.Select(id => tokenizer.Decode(new[] { id }, skipSpecial: false)));
        var rendering = RenderForTraining(messages, options, controlTokens);
        return ChatTokenization.Create(tokenizer, rendering);
    }

    /// <summary>
    /// The token(s) with which this template ends an assistant turn (<c>&lt;|eot_id|&gt;</c>, <c>&lt;|im_end|&gt;</c>,
    /// <c>&lt;/s&gt;</c>, <c>&lt;end_of_turn&gt;</c>, <c>&lt;|end|&gt;</c>, ...): the last token of the assistant span of a
    /// rendered probe conversation, when the tokenizer marks it special. Empty when the template ends turns with plain
    /// text or cannot render the probe. Chat generation stops at these (besides the model's eos ids), so a model
    /// finetuned on conversations stops at the end of its turn even when its generation_config.json does not list the
    /// template's end-of-turn token (typical for base models).
    /// </summary>
    public IReadOnlyList<int> EndOfTurnTokenIds(CausalLMTokenizer tokenizer, ChatTemplateOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ChatTokenization t;
        try { t = Tokenize(tokenizer, [ChatMessage.User("Hello"), ChatMessage.Assistant("Hi")], options); }
        catch (Exception e) when (e is JinjaException or InvalidOperationException or ArgumentException) { return []; }
        var ids = new List<int>();
        foreach (var span in t.Rendering.AssistantSpans.Where(s => s.Length > 0))
        {
            int last = -1;
            for (int j = 0; j < t.Ids.Count; j++)
                if (t.TokenOffsets[j].Start < span.End && t.TokenOffsets[j].End > span.Start) last = j;
            if (last >= 0 && tokenizer.SpecialIds.Contains(t.Ids[last]) && !ids.Contains(t.Ids[last])) ids.Add(t.Ids[last]);
        }
        return ids;
    }

    /// <summary>The templates (name → Jinja source) and special tokens, to save with a model and rebuild with <see cref="FromJson"/>.</summary>
    public string ToJson()
    {
        var o = new JsonObject
        {
            ["templates"] = new JsonObject(_templates.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value.Source))),
            ["special_tokens"] = new JsonObject(SpecialTokens.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
        };
        return o.ToJsonString();
    }

    /// <summary>A template saved by <see cref="ToJson"/>.</summary>
    public static ChatTemplate FromJson(string json)
    {
        var o = JsonNode.Parse(json)?.AsObject() ?? throw new FormatException("chat template JSON is empty");
        var templates = o["templates"]?.AsObject().ToDictionary(kv => kv.Key, kv => (string)kv.Value!)
            ?? throw new FormatException("chat template JSON has no 'templates'");
        var special = o["special_tokens"]?.AsObject().ToDictionary(kv => kv.Key, kv => (string)kv.Value!) ?? new Dictionary<string, string>();
        return new ChatTemplate(templates, special);
    }

    private JinjaTemplate Select(string? name, bool hasTools)
    {
        if (name is not null)
        {
            if (_templates.TryGetValue(name, out var named)) return named;
            throw new ArgumentException($"No chat template named '{name}'. Available: {string.Join(", ", _templates.Keys.OrderBy(k => k, StringComparer.Ordinal))}.", nameof(name));
        }
        if (_templates.Count == 1) return _templates.Values.First();
        if (hasTools && _templates.TryGetValue("tool_use", out var toolUse)) return toolUse;
        if (_templates.TryGetValue("default", out var dflt)) return dflt;
        throw new InvalidOperationException(
            $"This model has several chat templates and none is named 'default'; choose one with ChatTemplateOptions.TemplateName. Available: {string.Join(", ", _templates.Keys.OrderBy(k => k, StringComparer.Ordinal))}.");
    }

    // transformers: render(messages=..., tools=..., documents=..., add_generation_prompt=..., **{**special_tokens_map, **kwargs})
    private Dictionary<string, object?> Variables(List<object?> messages, bool addGenerationPrompt, ChatTemplateOptions? options)
    {
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var kv in SpecialTokens) vars[kv.Key] = kv.Value;
        if (options?.Variables is { } extra)
            foreach (var kv in extra)
            {
                if (s_reserved.Contains(kv.Key))
                    throw new ArgumentException($"Template variable '{kv.Key}' is set by the renderer itself; pass it through its own parameter.", nameof(options));
                vars[kv.Key] = PyJson.FromClr(kv.Value);
            }
        vars["messages"] = messages;
        vars["tools"] = options?.Tools is { } tools ? tools.Select(PyJson.FromNode).ToList() : null;
        vars["documents"] = options?.Documents is { } docs ? docs.Select(PyJson.FromNode).ToList() : null;
        vars["add_generation_prompt"] = addGenerationPrompt;
        return vars;
    }
}
