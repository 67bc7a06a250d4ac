using System.Text.Json.Nodes;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;
using Parameter = TorchSharp.Modules.Parameter;

namespace ML.Finetune.Adapters;

/// <summary>Settings of <see cref="PrefixTuningMethod"/>.</summary>
public sealed record PrefixTuningOptions
{
    /// <summary>P, the number of virtual tokens (prefix length per layer, must be &gt; 0).</summary>
    public int NumVirtualTokens { get; init; } = 8;
    /// <summary>
    /// Train the prefix through the reparameterisation MLP Embedding(P, token_dim) → Linear(token_dim→hidden) → Tanh →
    /// Linear(hidden→L·2·token_dim). Call <see cref="PrefixTuningMethod.FoldProjection"/> after training.
    /// </summary>
    public bool PrefixProjection { get; init; }
    /// <summary>Hidden size of the projection MLP (PEFT's encoder_hidden_size).</summary>
    public int EncoderHiddenSize { get; init; } = 512;
    /// <summary>Standard deviation of the N(0, σ²) init of the prefix table (or of the MLP's embedding). PEFT uses 1.</summary>
    public double InitStd { get; init; } = 1.0;

    internal void Validate()
    {
        if (NumVirtualTokens <= 0)
            throw new ArgumentOutOfRangeException(nameof(NumVirtualTokens), NumVirtualTokens, "the number of virtual tokens P must be > 0");
        if (PrefixProjection && EncoderHiddenSize <= 0)
            throw new ArgumentOutOfRangeException(nameof(EncoderHiddenSize), EncoderHiddenSize, "the projection's hidden size must be > 0");
        if (!(InitStd >= 0)) throw new ArgumentOutOfRangeException(nameof(InitStd), InitStd, "must be >= 0");
    }
}

/// <summary>
/// Prefix tuning (Li &amp; Liang 2021) in PEFT's layout: a learned key and value prefix of P entries at every layer,
/// placed as the first P entries of each layer's KV cache. The table <c>prompt_embeddings</c> is
/// [P, L·2·n_kv·D] with column c = ((layer·2 + kv)·n_kv + head)·D + d (kv 0 = key, 1 = value; n_kv = the model's
/// key/value heads, so GQA/MQA models store only their KV heads; D = the config's head_dim, which Qwen3 and Gemma set
/// apart from hidden/heads). On sliding-window layers the prefix is part of the window (see <see cref="BuildCache"/>). Prefix keys are used as-is (no RoPE, no projection);
/// the mask gets P leading ones; real tokens take positions P..P+T-1 (explicit position ids get +P, as peft 0.20);
/// logits cover only the real tokens. Every base parameter is frozen.
/// </summary>
public sealed class PrefixTuningMethod : IFinetuneMethod, IDisposable
{
    public const string MethodName = "prefix";
    public const string TensorName = "prompt_embeddings";
    public static readonly string[] MlpNames =
        ["mlp.embedding.weight", "mlp.transform.0.weight", "mlp.transform.0.bias", "mlp.transform.2.weight", "mlp.transform.2.bias"];

    // Either the table (no projection / folded) or the five MLP tensors, in MlpNames order.
    Parameter? _table;
    Parameter[]? _mlp;
    Tensor[] _init = [];      // φ₀ for the current parameters
    Tensor[]? _mlpInit;       // φ₀ of the MLP, kept so that the fold can carry φ₀ over
    bool _disabled;
    int _layers, _kvHeads, _headDim;
    IReadOnlyList<int?>? _windows; // the model's sliding windows: the prefix cache trims like the model's own cache

    public PrefixTuningMethod(PrefixTuningOptions? options = null)
    {
        Options = options ?? new PrefixTuningOptions();
        Options.Validate();
    }

    public PrefixTuningOptions Options { get; }
    public string Name => MethodName;
    public int NumVirtualTokens => Options.NumVirtualTokens;
    /// <summary>True while the MLP reparameterisation is in use (before <see cref="FoldProjection"/>).</summary>
    public bool HasProjection => _mlp is not null;
    /// <summary>n_kv·D: the per-layer width of a key or value prefix (PEFT's token_dim after its GQA rewrite).</summary>
    public int TokenDim => _kvHeads * _headDim;
    public int NumLayers => _layers;
    public int KeyValueHeads => _kvHeads;
    public int HeadDim => _headDim;

    public void Attach(CausalLM model, long seed)
    {
        ArgumentNullException.ThrowIfNull(model);
        foreach (var p in model.parameters()) p.requires_grad = false;
        var c = model.Config;
        _layers = c.NumLayers; _kvHeads = model.CacheHeads; _headDim = c.HeadDim; _windows = model.CacheWindows;
        int p0 = NumVirtualTokens;
        if (p0 >= c.MaxPositionEmbeddings)
            throw new ArgumentException($"P = {p0} virtual tokens do not fit the model's context of {c.MaxPositionEmbeddings} positions");
        var dtype = model.ComputeDType; var device = model.Device;
        using var scope = NewDisposeScope();
        using var gen = new Generator((ulong)seed);
        using (torch.no_grad())
        {
            if (!Options.PrefixProjection)
            {
                var t = torch.randn(new long[] { p0, (long)_layers * 2 * TokenDim }, generator: gen).mul_(Options.InitStd);
                SetTable(t.to(dtype, device));
            }
            else
            {
                int h = Options.EncoderHiddenSize, td = TokenDim, outDim = _layers * 2 * td;
                Tensor U(long[] shape, int fanIn) =>
                    torch.rand(shape, generator: gen).mul_(2).sub_(1).mul_(1.0 / Math.Sqrt(fanIn)); // nn.Linear's default range
                var tensors = new[]
                {
                    torch.randn(new long[] { p0, td }, generator: gen).mul_(Options.InitStd),
                    U([h, td], td), U([h], td), U([outDim, h], h), U([outDim], h),
                };
                SetMlp(tensors.Select(t => t.to(dtype, device)).ToArray());
            }
        }
    }

    void DisposeParams()
    {
        _table?.Dispose(); _table = null;
        if (_mlp is not null) foreach (var p in _mlp) p.Dispose();
        _mlp = null;
        foreach (var t in _init) t.Dispose();
        _init = [];
    }

    static Parameter NewParam(Tensor value)
    {
        var p = new Parameter(value.detach().clone().contiguous(), requires_grad: true);
        p.DetachFromDisposeScope();
        return p;
    }

    void SetTable(Tensor value)
    {
        DisposeParams();
        _table = NewParam(value);
        _init = [value.detach().clone().DetachFromDisposeScope()];
    }

    void SetMlp(Tensor[] values)
    {
        DisposeParams();
        _mlp = values.Select(NewParam).ToArray();
        _init = values.Select(v => v.detach().clone().DetachFromDisposeScope()).ToArray();
        if (_mlpInit is not null) foreach (var t in _mlpInit) t.Dispose();
        _mlpInit = values.Select(v => v.detach().clone().DetachFromDisposeScope()).ToArray();
    }

    static Tensor Project(IReadOnlyList<Tensor> m)
    {
        var e = m[0]; // Embedding looked up with ids 0..P-1 = the whole table
        var hdn = nn.functional.linear(e, m[1], m[2]).tanh();
        return nn.functional.linear(hdn, m[3], m[4]);
    }

    public IReadOnlyList<(string Name, Tensor Parameter)> TrainableParameters =>
        _mlp is not null ? MlpNames.Zip(_mlp, (n, p) => (n, (Tensor)p)).ToList()
        : _table is not null ? [(TensorName, _table)]
        : throw new InvalidOperationException("call Attach first");

    /// <summary>prompt_embeddings [P, L·2·n_kv·D]: the table, or the MLP's output (differentiable).</summary>
    public Tensor PromptEmbeddings() =>
        _mlp is not null ? Project(_mlp) : _table ?? throw new InvalidOperationException("call Attach first");

    /// <summary>Per-layer keys and values, each [n_kv, P, D], cut from <see cref="PromptEmbeddings"/> (differentiable).</summary>
    public (Tensor[] Keys, Tensor[] Values) LayerPrefixes()
    {
        var t = PromptEmbeddings().view(NumVirtualTokens, _layers, 2, _kvHeads, _headDim);
        var keys = new Tensor[_layers];
        var values = new Tensor[_layers];
        for (int l = 0; l < _layers; l++)
        {
            keys[l] = t.select(1, l).select(1, 0).permute(1, 0, 2);
            values[l] = t.select(1, l).select(1, 1).permute(1, 0, 2);
        }
        return (keys, values);
    }

    /// <summary>
    /// A KV cache pre-filled with the P prefix entries of every layer, for <paramref name="batch"/> rows. The prefix
    /// occupies cache positions 0..P−1, so on a sliding-window layer it counts toward the window like any earlier key
    /// (as in transformers' cache with PEFT): a query at position i sees prefix entry j only when i − W &lt; j.
    /// </summary>
    public KVCache BuildCache(int batch)
    {
        var (k, v) = LayerPrefixes();
        return KVCache.FromPrefix(k, v, batch, _windows);
    }

    /// <summary>
    /// Forward with the prefix: logits [B, T, V]. Explicit <paramref name="positionIds"/> are shifted by P.
    /// </summary>
    public Tensor Forward(CausalLM model, Tensor inputIds, Tensor? attentionMask, Tensor? positionIds = null) =>
        model.LogitsFromHidden(ForwardHidden(model, inputIds, attentionMask, positionIds));

    /// <summary>
    /// Final hidden states [B, T, d] with the prefix in effect (see <see cref="Forward"/>). With
    /// <paramref name="sequenceIds"/> (packed rows, <paramref name="positionIds"/> restarting per sequence) every
    /// sequence sees the whole prefix in front of itself, as it would alone.
    /// </summary>
    public Tensor ForwardHidden(CausalLM model, Tensor inputIds, Tensor? attentionMask, Tensor? positionIds = null, Tensor? sequenceIds = null)
    {
        long b = inputIds.shape[0], t = inputIds.shape[1];
        if (_disabled)
            return model.ForwardHidden(new CausalLMInput { InputIds = inputIds, AttentionMask = attentionMask, PositionIds = positionIds, SequenceIds = sequenceIds }).LastHiddenState;
        int p = NumVirtualTokens;
        PromptTuningMethod.CheckContext(model, p, t);
        using var cache = BuildCache((int)b);
        var mask = attentionMask ?? torch.ones(b, t, dtype: ScalarType.Int64, device: inputIds.device);
        mask = torch.cat([torch.ones(b, p, dtype: mask.dtype, device: mask.device), mask], 1);
        return model.ForwardHidden(new CausalLMInput
        {
            InputIds = inputIds,
            AttentionMask = mask,
            PositionIds = positionIds?.add(p),
            SequenceIds = sequenceIds,
            PastIsSharedPrefix = sequenceIds is not null,
            Cache = cache,
        }).LastHiddenState;
    }

    public Tensor HiddenStates(CausalLM model, Tensor inputIds, Tensor attentionMask, SequencePacking? packing = null) =>
        ForwardHidden(model, inputIds, attentionMask, packing?.PositionIds, packing?.SequenceIds);

    public IDisposable? UsePretrained(CausalLM model)
    {
        bool was = _disabled;
        _disabled = true;
        return new PromptTuningMethod.Scope(() => _disabled = was);
    }

    public Tensor DistanceFromPretrainedSquared()
    {
        var ps = TrainableParameters;
        Tensor? sum = null;
        for (int i = 0; i < ps.Count; i++)
        {
            var s = ps[i].Parameter.sub(_init[i]).square().sum();
            sum = sum is null ? s : sum.add(s);
        }
        return sum!;
    }

    /// <summary>
    /// Replaces the projection MLP by its output: afterwards the only parameter is the table prompt_embeddings
    /// (identical logits), and φ₀ becomes the MLP's initial output. No-op without a projection.
    /// </summary>
    public void FoldProjection()
    {
        if (_mlp is null) return;
        using var scope = NewDisposeScope();
        using (torch.no_grad())
        {
            var folded = Project(_mlp);
            var init0 = Project(_mlpInit!);
            DisposeParams();
            _table = NewParam(folded);
            _init = [init0.detach().clone().DetachFromDisposeScope()];
        }
    }

    public GenerationPrefix? GetGenerationPrefix(CausalLM model) =>
        _disabled ? null : new GenerationPrefix(null, BuildCache);

    public (IReadOnlyDictionary<string, Tensor> Tensors, string ConfigJson) SaveState()
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var (n, p) in TrainableParameters) d[n] = p.detach().cpu().contiguous().DetachFromDisposeScope();
        var cfg = new JsonObject
        {
            ["method"] = MethodName,
            ["num_virtual_tokens"] = NumVirtualTokens,
            ["prefix_projection"] = Options.PrefixProjection,
            ["folded"] = _mlp is null,
            ["encoder_hidden_size"] = Options.EncoderHiddenSize,
            ["init_std"] = Options.InitStd,
        };
        return (d, cfg.ToJsonString());
    }

    public static PrefixTuningOptions OptionsFromJson(string json)
    {
        var o = JsonNode.Parse(json)!.AsObject();
        return new PrefixTuningOptions
        {
            NumVirtualTokens = (int)o["num_virtual_tokens"]!,
            PrefixProjection = (bool)o["prefix_projection"]!,
            EncoderHiddenSize = (int)o["encoder_hidden_size"]!,
            InitStd = (double)o["init_std"]!,
        };
    }

    /// <summary>
    /// Restores <see cref="SaveState"/>'s tensors: the MLP tensors (projection still active), or the table alone
    /// (a folded / PEFT prefix; an active projection is then folded first and replaced).
    /// </summary>
    public void LoadState(IReadOnlyDictionary<string, Tensor> tensors)
    {
        if (_table is null && _mlp is null) throw new InvalidOperationException("call Attach first");
        bool hasTable = tensors.ContainsKey(TensorName);
        if (_mlp is not null && !hasTable)
        {
            for (int i = 0; i < MlpNames.Length; i++)
            {
                if (!tensors.TryGetValue(MlpNames[i], out var t))
                    throw new InvalidDataException($"prefix tuning state: tensor '{MlpNames[i]}' is missing");
                CheckShape(MlpNames[i], t, _mlp[i].shape);
                using (torch.no_grad()) _mlp[i].copy_(t);
            }
            return;
        }
        if (!hasTable) throw new InvalidDataException($"prefix tuning state: tensor '{TensorName}' is missing");
        FoldProjection();
        var table = tensors[TensorName];
        CheckShape(TensorName, table, _table!.shape);
        using (torch.no_grad()) _table.copy_(table);
    }

    static void CheckShape(string name, Tensor t, long[] expected)
    {
        if (!t.shape.SequenceEqual(expected))
            throw new InvalidDataException(
                $"prefix tuning state: tensor '{name}' has shape [{string.Join(",", t.shape)}] but the method expects [{string.Join(",", expected)}]");
    }

    public void Dispose()
    {
        DisposeParams();
        if (_mlpInit is not null) foreach (var t in _mlpInit) t.Dispose();
        _mlpInit = null;
    }
}
