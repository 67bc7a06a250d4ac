using System.Text.Json;
using System.Text.Json.Nodes;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;
using Parameter = TorchSharp.Modules.Parameter;

namespace ML.Finetune.Adapters;

/// <summary>How the k soft-prompt vectors start.</summary>
public enum PromptTuningInit
{
    /// <summary>Each entry ~ U(−ε, ε) with ε = <see cref="PromptTuningOptions.InitRange"/>, from the Attach seed.</summary>
    Random,
    /// <summary>
    /// The token embeddings of <see cref="PromptTuningOptions.InitTokenIds"/>. Fewer than k ids are repeated cyclically;
    /// more than k ids are truncated to their first k (as PEFT does).
    /// </summary>
    Text,
    /// <summary>k rows of the token-embedding matrix drawn uniformly (with replacement) from the Attach seed.</summary>
    SampleVocab,
}

/// <summary>Settings of <see cref="PromptTuningMethod"/>.</summary>
public sealed record PromptTuningOptions
{
    /// <summary>k, the number of virtual tokens (must be &gt; 0).</summary>
    public int NumVirtualTokens { get; init; } = 8;
    public PromptTuningInit Init { get; init; } = PromptTuningInit.Random;
    /// <summary>ε of the Random init.</summary>
    public double InitRange { get; init; } = 0.5;
    /// <summary>Token ids for the Text init (tokenise the text with the model's tokenizer).</summary>
    public IReadOnlyList<long>? InitTokenIds { get; init; }
    /// <summary>The text behind <see cref="InitTokenIds"/>; only written to a PEFT adapter_config.json.</summary>
    public string? InitText { get; init; }

    internal void Validate()
    {
        if (NumVirtualTokens <= 0)
            throw new ArgumentOutOfRangeException(nameof(NumVirtualTokens), NumVirtualTokens, "the number of virtual tokens k must be > 0");
        if (Init == PromptTuningInit.Random && !(InitRange > 0))
            throw new ArgumentOutOfRangeException(nameof(InitRange), InitRange, "the Random init range ε must be > 0");
        if (Init == PromptTuningInit.Text && (InitTokenIds is null || InitTokenIds.Count == 0))
            throw new ArgumentException("the Text init needs at least one token id in InitTokenIds", nameof(InitTokenIds));
    }
}

/// <summary>
/// Prompt tuning (Lester et al. 2021): k learned vectors f_1..f_k ∈ ℝ^d are prepended to the token embeddings at the
/// input layer only; every base parameter is frozen. The attention mask gets k leading ones and the real tokens take
/// positions k..k+T-1 (PEFT runs the model on the concatenated embeddings, so the positions simply continue).
/// <see cref="HiddenStates"/> drops the k virtual rows; <see cref="FullLogits"/> keeps them (PEFT's output layout).
/// </summary>
public sealed class PromptTuningMethod : IFinetuneMethod, IDisposable
{
    public const string MethodName = "prompt";
    public const string TensorName = "prompt_embeddings";

    Parameter? _prompt;
    Tensor? _init; // φ₀
    bool _disabled;

    public PromptTuningMethod(PromptTuningOptions? options = null)
    {
        Options = options ?? new PromptTuningOptions();
        Options.Validate();
    }

    public PromptTuningOptions Options { get; }
    public string Name => MethodName;
    public int NumVirtualTokens => Options.NumVirtualTokens;

    /// <summary>The learned soft prompt [k, d] (a leaf that requires grad).</summary>
    public Parameter SoftPrompt => _prompt ?? throw new InvalidOperationException("call Attach first");

    public void Attach(CausalLM model, long seed)
    {
        ArgumentNullException.ThrowIfNull(model);
        foreach (var p in model.parameters()) p.requires_grad = false;
        int k = Options.NumVirtualTokens, d = model.Config.HiddenSize;
        if (k >= model.Config.MaxPositionEmbeddings)
            throw new ArgumentException($"k = {k} virtual tokens do not fit the model's context of {model.Config.MaxPositionEmbeddings} positions");
        using var scope = NewDisposeScope();
        using var gen = new Generator((ulong)seed);
        Tensor init;
        using (torch.no_grad())
        {
            switch (Options.Init)
            {
                case PromptTuningInit.Random:
                    init = torch.rand(new long[] { k, d }, generator: gen, dtype: ScalarType.Float32).mul_(2 * Options.InitRange).sub_(Options.InitRange);
                    break;
                case PromptTuningInit.Text:
                    var ids = Options.InitTokenIds!;
                    var chosen = Enumerable.Range(0, k).Select(i => ids[i % ids.Count]).ToArray(); // repeat, or truncate to the first k
                    foreach (var id in chosen)
                        if (id < 0 || id >= model.Config.VocabSize)
                            throw new ArgumentException($"init token id {id} is outside the vocabulary of size {model.Config.VocabSize}");
                    init = model.EmbedTokens(torch.tensor(chosen, device: model.Device).unsqueeze(0)).squeeze(0);
                    break;
                case PromptTuningInit.SampleVocab:
                    var rows = torch.randint(0, model.Config.VocabSize, new long[] { k }, generator: gen, dtype: ScalarType.Int64);
                    init = model.EmbedTokens(rows.to(model.Device).unsqueeze(0)).squeeze(0);
                    break;
                default: throw new NotSupportedException($"prompt init {Options.Init}");
            }
            init = init.to(model.ComputeDType, model.Device).contiguous();
        }
        SetValue(init);
    }

    void SetValue(Tensor value)
    {
        _prompt?.Dispose(); _init?.Dispose();
        using (torch.no_grad())
        {
            _init = value.detach().clone().DetachFromDisposeScope();
            _prompt = new Parameter(value.detach().clone(), requires_grad: true);
            _prompt.DetachFromDisposeScope();
        }
    }

    public IReadOnlyList<(string Name, Tensor Parameter)> TrainableParameters => [(TensorName, SoftPrompt)];

    /// <summary>The soft prompt expanded for a batch and concatenated in front of the token embeddings.</summary>
    public (Tensor Embeds, Tensor Mask) PrependPrompt(CausalLM model, Tensor inputIds, Tensor? attentionMask)
    {
        long b = inputIds.shape[0], t = inputIds.shape[1];
        int k = NumVirtualTokens;
        CheckContext(model, k, t);
        var tok = model.EmbedTokens(inputIds);
        var embeds = torch.cat([SoftPrompt.to(tok.dtype).unsqueeze(0).expand(b, -1, -1), tok], 1);
        var mask = attentionMask ?? torch.ones(b, t, dtype: ScalarType.Int64, device: inputIds.device);
        mask = torch.cat([torch.ones(b, k, dtype: mask.dtype, device: mask.device), mask], 1);
        return (embeds, mask);
    }

    internal static void CheckContext(CausalLM model, int virtualTokens, long t)
    {
        if (virtualTokens + t > model.Config.MaxPositionEmbeddings)
            throw new ArgumentException(
                $"{virtualTokens} virtual tokens + a prompt of {t} tokens = {virtualTokens + t} exceed the model's context of {model.Config.MaxPositionEmbeddings} positions");
    }

    /// <summary>Logits [B, k+T, V] including the k virtual rows (PEFT's output), with the soft prompt in effect.</summary>
    public Tensor FullLogits(CausalLM model, Tensor inputIds, Tensor? attentionMask)
    {
        var (embeds, mask) = PrependPrompt(model, inputIds, attentionMask);
        return model.Forward(new CausalLMInput { InputsEmbeds = embeds, AttentionMask = mask }).Logits;
    }

    public Tensor HiddenStates(CausalLM model, Tensor inputIds, Tensor attentionMask, SequencePacking? packing = null)
    {
        if (_disabled)
            return model.ForwardHidden(new CausalLMInput
            {
                InputIds = inputIds, AttentionMask = attentionMask, PositionIds = packing?.PositionIds, SequenceIds = packing?.SequenceIds,
            }).LastHiddenState;
        if (packing is not null) return PackedHiddenStates(model, inputIds, attentionMask, packing);
        var (embeds, mask) = PrependPrompt(model, inputIds, attentionMask);
        var full = model.ForwardHidden(new CausalLMInput { InputsEmbeds = embeds, AttentionMask = mask }).LastHiddenState;
        return full.narrow(1, NumVirtualTokens, inputIds.shape[1]);
    }

    /// <summary>
    /// Packed rows: the soft prompt goes in front of every sequence of a row, at positions 0..k−1 with the sequence's
    /// tokens from k on, inside that sequence's attention block; exactly what each sequence computes alone in an
    /// unpacked batch. The expanded rows are gathered from [soft prompt; token embeddings], and the hidden states of
    /// the real tokens gathered back, so gradients reach the soft prompt once per sequence.
    /// </summary>
    Tensor PackedHiddenStates(CausalLM model, Tensor inputIds, Tensor attentionMask, SequencePacking packing)
    {
        long b = inputIds.shape[0], t = inputIds.shape[1];
        int k = NumVirtualTokens;
        var lengths = packing.Lengths();
        CheckContext(model, k, lengths.SelectMany(l => l).DefaultIfEmpty(0).Max());
        long width = t + k * (long)lengths.Max(l => l.Length);
        var source = new long[b * width];   // index into [k soft rows; t token rows] of each expanded slot
        var pos = new long[b * width];
        var seq = new long[b * width];
        var mask = new long[b * width];
        var back = new long[b * t];         // expanded slot of each original token
        var realMask = attentionMask.cpu().data<long>().ToArray();
        for (int r = 0; r < b; r++)
        {
            long at = r * width, token = 0;
            for (int s = 0; s < lengths[r].Length; s++)
            {
                for (int v = 0; v < k; v++, at++) { source[at] = v; pos[at] = v; seq[at] = s; mask[at] = 1; }
                for (int j = 0; j < lengths[r][s]; j++, at++, token++)
                {
                    source[at] = k + token; pos[at] = k + j; seq[at] = s; mask[at] = 1;
                    back[r * t + token] = at - r * width;
                }
            }
            // Pads: the row's own pad tokens (mask 0), then filler slots that repeat the last one.
            for (; token < t; token++, at++)
            {
                source[at] = k + token; seq[at] = -1; mask[at] = realMask[r * t + token];
                back[r * t + token] = at - r * width;
            }
            for (; at < (r + 1) * width; at++) { source[at] = k + t - 1; seq[at] = -1; }
        }
        var dev = inputIds.device;
        Tensor T(long[] a, long cols) => torch.tensor(a, new long[] { b, cols }, device: dev);
        var tok = model.EmbedTokens(inputIds);
        long d = tok.shape[2];
        var all = torch.cat([SoftPrompt.to(tok.dtype).unsqueeze(0).expand(b, -1, -1), tok], 1);
        var embeds = all.gather(1, T(source, width).unsqueeze(-1).expand(-1, -1, d));
        var hidden = model.ForwardHidden(new CausalLMInput
        {
            InputsEmbeds = embeds, AttentionMask = T(mask, width), PositionIds = T(pos, width), SequenceIds = T(seq, width),
        }).LastHiddenState;
        return hidden.gather(1, T(back, t).unsqueeze(-1).expand(-1, -1, hidden.shape[2]));
    }

    public IDisposable? UsePretrained(CausalLM model)
    {
        bool was = _disabled;
        _disabled = true;
        return new Scope(() => _disabled = was);
    }

    public Tensor DistanceFromPretrainedSquared() => SoftPrompt.sub(_init!).square().sum();

    public GenerationPrefix? GetGenerationPrefix(CausalLM model) => _disabled ? null : new GenerationPrefix(SoftPrompt, null);

    public (IReadOnlyDictionary<string, Tensor> Tensors, string ConfigJson) SaveState()
    {
        var t = SoftPrompt.detach().cpu().contiguous().DetachFromDisposeScope();
        var cfg = new JsonObject
        {
            ["method"] = MethodName,
            ["num_virtual_tokens"] = Options.NumVirtualTokens,
            ["init"] = Options.Init.ToString(),
            ["init_range"] = Options.InitRange,
            ["init_text"] = Options.InitText,
            ["init_token_ids"] = Options.InitTokenIds is null ? null : new JsonArray(Options.InitTokenIds.Select(i => (JsonNode)i).ToArray()),
        };
        return (new Dictionary<string, Tensor> { [TensorName] = t }, cfg.ToJsonString());
    }

    /// <summary>Rebuilds the options from <see cref="SaveState"/>'s JSON.</summary>
    public static PromptTuningOptions OptionsFromJson(string json)
    {
        var o = JsonNode.Parse(json)!.AsObject();
        return new PromptTuningOptions
        {
            NumVirtualTokens = (int)o["num_virtual_tokens"]!,
            Init = Enum.Parse<PromptTuningInit>((string)o["init"]!),
            InitRange = (double)o["init_range"]!,
            InitText = (string?)o["init_text"],
            InitTokenIds = o["init_token_ids"] is JsonArray a ? a.Select(n => (long)n!).ToArray() : null,
        };
    }

    public void LoadState(IReadOnlyDictionary<string, Tensor> tensors)
    {
        if (!tensors.TryGetValue(TensorName, out var t))
            throw new InvalidDataException($"prompt tuning state: tensor '{TensorName}' is missing");
        if (!t.shape.SequenceEqual(SoftPrompt.shape))
            throw new InvalidDataException(
                $"prompt tuning state: tensor '{TensorName}' has shape [{string.Join(",", t.shape)}] but the method expects [{string.Join(",", SoftPrompt.shape)}]");
        using (torch.no_grad()) SoftPrompt.copy_(t);
    }

    public void Dispose()
    {
        _prompt?.Dispose(); _init?.Dispose();
        _prompt = null; _init = null;
    }

    internal sealed class Scope(Action undo) : IDisposable
    {
        Action? _undo = undo;
        public void Dispose() { _undo?.Invoke(); _undo = null; }
    }
}
