using Microsoft.ML;
using ML.Finetune.Adapters;
using ML.Finetune.Chat;
using ML.Finetune.Generation;
using ML.Finetune.Models;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;
using ML.Finetune.Transformers;
using TorchSharp;

namespace ML.Finetune.Samples.Cli;

/// <summary>
/// The model `generate` and `evaluate` run: an HF folder with an optional PEFT adapter (--model, --adapter), or a
/// model.zip written by `finetune` (--zip). Both expose the same parts, so both paths generate the same way.
/// </summary>
public sealed class LoadedModel : IDisposable
{
    LoadedModel(CausalLM model, CausalLMTokenizer tokenizer, IFinetuneMethod? method, FinetuneTransformer? transformer, ChatTemplate? template)
    {
        Model = model; Tokenizer = tokenizer; Method = method; Transformer = transformer; ChatTemplate = template;
    }

    /// <summary>The chat template (the zip's, else the model folder's), or null.</summary>
    public ChatTemplate? ChatTemplate { get; }

    public CausalLM Model { get; }
    public CausalLMTokenizer Tokenizer { get; }
    /// <summary>The finetuning method in effect (prompt/prefix tuning act outside model.Forward); null for a plain model.</summary>
    public IFinetuneMethod? Method { get; }
    /// <summary>The loaded model.zip (null for --model).</summary>
    public FinetuneTransformer? Transformer { get; }

    public static LoadedModel FromFolder(string model, string? adapter)
    {
        var tokenizer = CausalLMTokenizer.FromFolder(model);
        var m = CausalLMFactory.LoadPretrained(model);
        try
        {
            IFinetuneMethod? method = adapter == null ? null
                : PeftType(adapter) == "LORA" ? PeftLoraIO.Import(m, adapter) : PeftPromptLearning.Load(adapter, m);
            return new LoadedModel(m, tokenizer, method, null, ChatTemplate.FolderHasTemplate(model) ? ChatTemplate.FromFolder(model) : null);
        }
        catch { m.Dispose(); throw; }
    }

    /// <summary>
    /// Loads a model.zip. A zip of a method that needs its base model (LoRA, prompt, prefix) finds a moved base through
    /// <paramref name="baseModel"/> (--base-model) or MLFINETUNE_BASE_MODEL_DIR; failures name the zip and the folders searched.
    /// </summary>
    public static LoadedModel FromZip(MLContext ml, string zip, string? baseModel)
    {
        string? added = baseModel == null ? null : Path.GetFullPath(baseModel);
        if (added != null) lock (FinetuneTransformer.BaseModelSearchPaths) FinetuneTransformer.BaseModelSearchPaths.Add(added);
        ITransformer loaded;
        try { loaded = ml.Model.Load(zip, out _); }
        catch (Exception e) when (CliErrors.Root(e) is not OperationCanceledException) { throw Explain(CliErrors.Root(e), zip, baseModel); }
        finally
        {
            if (added != null) lock (FinetuneTransformer.BaseModelSearchPaths) FinetuneTransformer.BaseModelSearchPaths.Remove(added);
        }
        if (loaded is not FinetuneTransformer t)
        {
            (loaded as IDisposable)?.Dispose();
            throw new InvalidDataException($"{zip}: an ML.NET model, but not one written by finetune (it holds a {loaded.GetType().Name})");
        }
        return new LoadedModel(t.Model, t.Tokenizer, t.Method, t, t.ChatTemplate);
    }

    static Exception Explain(Exception root, string zip, string? baseModel)
    {
        const string how = "pass --base-model <folder> or set MLFINETUNE_BASE_MODEL_DIR to the folder it moved to";
        if (root is FileNotFoundException { FileName: string missing } && !File.Exists(missing) && !RealPath.Same(RealPath.Of(missing), RealPath.Of(zip)))
        {
            string name = Path.GetFileName(missing.TrimEnd('/', '\\'));
            var searched = new List<string> { missing };
            if (Environment.GetEnvironmentVariable(FinetuneTransformer.BaseModelDirVariable) is { Length: > 0 } env)
                searched.Add($"{env} or {Path.Combine(env, name)} ({FinetuneTransformer.BaseModelDirVariable})");
            if (baseModel != null) searched.Add($"{baseModel} or {Path.Combine(baseModel, name)} (--base-model)");
            return new FileNotFoundException($"{zip} needs the base model it was trained on, which is no longer where it was: looked in " +
                                             $"{string.Join("; ", searched)}; {how}", missing);
        }
        if (root is InvalidDataException && root.Message.Contains("is not the one this model was trained on", StringComparison.Ordinal))
            return new InvalidDataException($"{zip}: {CliErrors.Clean(root.Message)} ({how})");
        if (root is FormatException or InvalidDataException && (root.Message.Contains("zip", StringComparison.OrdinalIgnoreCase) || root.InnerException is InvalidDataException))
            return new InvalidDataException($"{zip}: not a model.zip written by finetune — the file is not a complete zip archive " +
                                            $"({CliErrors.Clean(root.InnerException?.Message ?? root.Message).TrimEnd('.')}); is it truncated?");
        return new InvalidDataException($"{zip}: not a model.zip written by finetune (ML.NET could not load it: {CliErrors.Clean(root.Message)})");
    }

    static string PeftType(string adapter)
    {
        string cfg = Path.Combine(adapter, "adapter_config.json");
        if (!File.Exists(cfg)) throw new FileNotFoundException($"{cfg} not found: '--adapter' must be a PEFT adapter folder");
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(cfg));
            return doc.RootElement.TryGetProperty("peft_type", out var t) && t.ValueKind == System.Text.Json.JsonValueKind.String
                ? t.GetString()! : throw new InvalidDataException($"{cfg}: field 'peft_type' is missing");
        }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"{cfg}: not valid JSON ({CliErrors.Clean(e.Message)})"); }
    }

    /// <summary>
    /// Greedy continuation of <paramref name="prompt"/> (see <see cref="GenerateFrom"/> for how the context is shared).
    /// </summary>
    public string Generate(string prompt, int maxTokens, Action<string> warn)
    {
        var ids = Tokenizer.Encode(prompt).Select(i => (long)i).ToList();
        if (ids.Count == 0 && Tokenizer.EosId is int e) ids.Add(e);
        if (ids.Count == 0) throw new ArgumentException("--prompt is empty and the tokenizer has neither bos nor eos to start from");
        var eos = new HashSet<long>(Model.Config.EosTokenIds);
        if (Tokenizer.EosId is int te) eos.Add(te);
        return GenerateFrom(ids, maxTokens, eos, warn);
    }

    /// <summary>
    /// The assistant's reply to a conversation: the chat template with the generation prompt, greedy generation that stops
    /// at the template's end-of-turn token or an eos (<see cref="TextGenerator.ChatStopTokenIds"/>).
    /// </summary>
    public string GenerateChat(IReadOnlyList<ChatMessage> messages, int maxTokens, Action<string> warn)
    {
        var template = ChatTemplate ?? throw new InvalidOperationException(
            "--chat needs a chat template, and the model has none (neither chat_template.jinja nor a chat_template field in tokenizer_config.json)");
        var ids = Tokenizer.EncodeToIds(template.Render(messages, addGenerationPrompt: true), addSpecialTokens: false).Select(i => (long)i).ToList();
        return GenerateFrom(ids, maxTokens, TextGenerator.ChatStopTokenIds(Model.Config, Tokenizer, template).ToHashSet(), warn);
    }

    /// <summary>
    /// Greedy generation from prompt ids until a stop id. Virtual tokens (prompt/prefix tuning), prompt and new tokens must
    /// fit the model's context. A prompt that fits is kept whole and --max-tokens is capped at the room left; a prompt
    /// that does not fit is cut from the left (BOS kept), leaving room for min(--max-tokens, half the context) new tokens.
    /// Either adjustment is reported through <paramref name="warn"/>.
    /// </summary>
    string GenerateFrom(List<long> ids, int maxTokens, HashSet<long> stops, Action<string> warn)
    {
        int context = Model.Config.MaxPositionEmbeddings, virtualTokens = TextGenerator.VirtualTokens(Model, Method);
        int room = context - virtualTokens;
        string where = $"the model's context of {context} tokens{Virtual(virtualTokens)}";
        if (room < 2) throw new InvalidOperationException($"{where} leaves no room for a prompt");
        int newTokens = maxTokens;
        if (ids.Count + maxTokens > room && ids.Count < room)
        {
            newTokens = room - ids.Count;
            warn($"the prompt ({ids.Count} tokens) and --max-tokens {maxTokens} exceed {where}: generating at most {newTokens} new tokens");
        }
        else if (ids.Count >= room)
        {
            newTokens = Math.Max(1, Math.Min(maxTokens, room / 2));
            int keep = room - newTokens;
            warn($"the prompt has {ids.Count} tokens, more than {where} holds: kept its last {keep} tokens " +
                 $"(cut from the left{(Tokenizer.BosId is int b && ids[0] == b ? ", bos kept" : "")}) to generate up to {newTokens}");
            ids = TextGenerator.TruncateLeft(ids, keep, Tokenizer.BosId).ToList();
        }
        var options = new GenerationOptions { MaxNewTokens = newTokens, EosTokenIds = stops.ToList(), PadTokenId = Tokenizer.PadId ?? Tokenizer.EosId ?? 0 };
        var prompts = new[] { ids.ToArray() };
        var result = Method is null ? TextGenerator.Generate(Model, prompts, options) : TextGenerator.Generate(Model, Method, prompts, options);
        return Tokenizer.Decode(result.NewTokens[0].Where(t => !stops.Contains(t)).Select(t => (int)t)).Trim();
    }

    static string Virtual(int n) => n > 0 ? $" ({n} taken by the method's virtual tokens)" : "";

    public void Dispose()
    {
        if (Transformer != null) { Transformer.Dispose(); return; }
        (Method as IDisposable)?.Dispose();
        Model.Dispose();
    }
}
