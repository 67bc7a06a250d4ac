using System.Text.Json.Nodes;

namespace ML.Finetune.Chat;

/// <summary>Optional inputs of <see cref="ChatTemplate.Render"/>.</summary>
public sealed class ChatTemplateOptions
{
    /// <summary>Tool (function) JSON schemas, passed to the template as <c>tools</c>.</summary>
    public IReadOnlyList<JsonNode>? Tools { get; init; }

    /// <summary>Documents for retrieval-augmented templates, passed as <c>documents</c>.</summary>
    public IReadOnlyList<JsonNode>? Documents { get; init; }

    /// <summary>
    /// Extra template variables (transformers' <c>**kwargs</c>), e.g. <c>enable_thinking = false</c> for Qwen3 or
    /// <c>date_string</c> for Llama 3.x; they override the special tokens of the same name. Values: strings, numbers,
    /// booleans, null, JSON nodes, lists, dictionaries.
    /// </summary>
    public IReadOnlyDictionary<string, object?>? Variables { get; init; }

    /// <summary>Which named template to use when the model has several (default: "tool_use" when tools are given and it exists, else "default").</summary>
    public string? TemplateName { get; init; }

    /// <summary>The time <c>strftime_now</c> reports (default: the local clock). Set it for reproducible renders.</summary>
    public DateTime? Now { get; init; }
}
