using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Adapters;

/// <summary>How many parameters train, out of how many the adapted model has (base + adapters), as PEFT reports it.</summary>
public sealed record TrainableParameterSummary(long Trainable, long Total)
{
    public double Fraction => Total == 0 ? 0 : (double)Trainable / Total;
    public override string ToString() => $"trainable params: {Trainable:N0} || all params: {Total:N0} || trainable%: {100 * Fraction:F4}";
}

/// <summary>
/// LoRA as an <see cref="IFinetuneMethod"/>: the base model is frozen and each targeted projection gets a
/// <see cref="LoraLinearAdapter"/>. Only A and B train.
/// </summary>
public sealed class LoraMethod : IFinetuneMethod
{
    readonly List<(string Path, AdaptableLinear Layer, LoraLinearAdapter Adapter)> _targets = new();
    CausalLM? _model;

    public LoraMethod(LoraConfig config)
    {
        config.Validate();
        Config = config;
    }

    public LoraConfig Config { get; }
    public string Name => "lora";

    /// <summary>The adapted layers in model order: dotted module path, layer, adapter.</summary>
    public IReadOnlyList<(string Path, AdaptableLinear Layer, LoraLinearAdapter Adapter)> Targets => _targets;

    /// <summary>Set by <see cref="Attach"/>.</summary>
    public TrainableParameterSummary? Summary { get; private set; }

    /// <summary>
    /// A PEFT adapter folder whose A/B initialise the adapters on <see cref="Attach"/> instead of random init (continue
    /// training or start from an existing adapter). Its keys and shapes must fit this config on the model; the folder's
    /// own config is not read here (use <see cref="PeftLoraIO.Import"/> to take the whole adapter as it is).
    /// </summary>
    public string? InitialAdapterFolder { get; init; }

    /// <summary>True while the adapters are folded into the base weights (see <see cref="Merge"/>).</summary>
    public bool IsMerged { get; private set; }

    /// <summary>
    /// PEFT's per-architecture default target modules (q_proj, v_proj for Llama, Mistral, Qwen2/3, Gemma 2/3; c_attn for
    /// GPT-2). PEFT has none for Phi-3; we use its fused qkv_proj, the projection that holds q and v.
    /// </summary>
    public static IReadOnlyList<string> DefaultTargetModules(CausalLMConfig config) => config.ModelType switch
    {
        "gpt2" => ["c_attn"],
        "phi3" => ["qkv_proj"],
        _ => ["q_proj", "v_proj"],
    };

    /// <summary>The dotted paths of the layers this config selects in <paramref name="model"/>.</summary>
    public static IReadOnlyList<string> SelectTargets(LoraConfig config, CausalLM model)
    {
        var linears = model.NamedLinears().Select(l => l.path).ToList();
        Func<string, bool> match;
        string described;
        if (config.TargetModulesRegex != null)
        {
            var re = new Regex(@"\A(?:" + config.TargetModulesRegex + @")\z", RegexOptions.CultureInvariant);
            match = re.IsMatch;
            described = $"regex '{config.TargetModulesRegex}'";
        }
        else
        {
            var names = config.TargetModules ?? DefaultTargetModules(model.Config);
            if (names.Count == 1 && names[0] == LoraConfig.AllLinear)
                match = p => p != "lm_head" && !p.EndsWith(".lm_head");
            else
                match = p => names.Any(n => p == n || p.EndsWith("." + n));
            described = $"[{string.Join(", ", names)}]";
        }
        var selected = linears.Where(match).ToList();
        if (config.LayersToTransform != null)
            selected = selected.Where(p => LayerIndex(p) is int i && config.LayersToTransform.Contains(i)).ToList();
        if (selected.Count == 0)
        {
            var leafNames = linears.Select(p => p[(p.LastIndexOf('.') + 1)..]).Distinct();
            throw new ArgumentException(
                $"LoRA target modules {described}" +
                (config.LayersToTransform != null ? $" in layers [{string.Join(", ", config.LayersToTransform)}]" : "") +
                $" match no module of this {model.Config.ModelType} model. Linear modules that exist: {string.Join(", ", leafNames)} " +
                $"(e.g. {linears.FirstOrDefault()})", nameof(config));
        }
        return selected;
    }

    static readonly Regex LayerRe = new(@"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.", RegexOptions.CultureInvariant);
    static int? LayerIndex(string path) { var m = LayerRe.Match(path); return m.Success ? int.Parse(m.Groups[1].Value) : null; }

    public void Attach(CausalLM model, long seed)
    {
        if (_model != null) throw new InvalidOperationException("This LoraMethod is already attached to a model");
        var paths = SelectTargets(Config, model);
        var layers = model.NamedLinears().ToDictionary(l => l.path, l => l.module);
        // Check every rank before touching the model.
        foreach (var p in paths)
        {
            var l = layers[p];
            long max = Math.Min(l.InFeatures, l.OutFeatures);
            if (Config.Rank > max)
                throw new ArgumentOutOfRangeException(nameof(Config.Rank), Config.Rank,
                    $"LoRA rank {Config.Rank} exceeds min(in, out) = {max} of '{p}' ({l.InFeatures}→{l.OutFeatures})");
            if (l.Adapter != null) throw new InvalidOperationException($"'{p}' already has an adapter ('{l.Adapter.Name}')");
        }
        if (InitialAdapterFolder != null) PeftLoraIO.CheckWeights(InitialAdapterFolder, Config.Rank, paths.Select(p => (p, layers[p])));
        foreach (var p in model.parameters()) p.requires_grad_(false);
        using var gen = new Generator((ulong)seed);
        foreach (var p in paths)
        {
            var l = layers[p];
            var w = l.weight;
            var dtype = w.dtype is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : w.dtype;
            var a = new LoraLinearAdapter(l.InFeatures, l.OutFeatures, Config.Rank, Config.Scale, Config.Dropout, dtype);
            a.Initialize(Config.Init, gen); // on CPU so the draw does not depend on the device
            if (w.device.type != DeviceType.CPU) a.to(w.device);
            if (!l.training) a.eval();
            l.Adapter = a;
            l.AdapterEnabled = true;
            _targets.Add((p, l, a));
        }
        _model = model;
        if (InitialAdapterFolder != null) PeftLoraIO.CopyWeights(InitialAdapterFolder, this);
        long trainable = _targets.Sum(t => t.Adapter.A.numel() + t.Adapter.B.numel());
        long total = model.parameters().Sum(p => p.numel());
        Summary = new TrainableParameterSummary(trainable, total);
    }

    CausalLM Model => _model ?? throw new InvalidOperationException("Call Attach first");

    public IReadOnlyList<(string Name, Tensor Parameter)> TrainableParameters =>
        _targets.SelectMany(t => new (string, Tensor)[] { ($"{t.Path}.lora.A", t.Adapter.A), ($"{t.Path}.lora.B", t.Adapter.B) }).ToList();

    public Tensor HiddenStates(CausalLM model, Tensor inputIds, Tensor attentionMask, SequencePacking? packing = null) =>
        model.ForwardHidden(new CausalLMInput
        {
            InputIds = inputIds, AttentionMask = attentionMask, PositionIds = packing?.PositionIds, SequenceIds = packing?.SequenceIds,
        }).LastHiddenState;

    public IDisposable? UsePretrained(CausalLM model)
    {
        if (IsMerged) throw new InvalidOperationException("The LoRA adapters are merged into the weights; Unmerge before using the pretrained model");
        return model.DisableAdapters();
    }

    /// <summary>Σ‖s·B·A‖²_F, computed as s²·Σ (BᵀB ⊙ AAᵀ) on r×r matrices (never forms the out×in product).</summary>
    public Tensor DistanceFromPretrainedSquared()
    {
        _ = Model;
        Tensor? sum = null;
        foreach (var (_, _, a) in _targets)
        {
            var btb = torch.matmul(a.B.t(), a.B);
            var aat = torch.matmul(a.A, a.A.t());
            var term = btb.mul(aat).sum().to_type(ScalarType.Float32);
            sum = sum is null ? term : sum.add(term);
        }
        return sum!.mul(Config.Scale * Config.Scale);
    }

    public GenerationPrefix? GetGenerationPrefix(CausalLM model) => null;

    public (IReadOnlyDictionary<string, Tensor> Tensors, string ConfigJson) SaveState()
    {
        var tensors = TrainableParameters.ToDictionary(p => p.Name, p => p.Parameter.detach().cpu().contiguous().clone());
        var o = JsonNode.Parse(Config.ToJson())!.AsObject();
        o["target_paths"] = new JsonArray(_targets.Select(t => (JsonNode)t.Path!).ToArray());
        if (Summary != null)
            o["trainable_parameters"] = new JsonObject { ["trainable"] = Summary.Trainable, ["total"] = Summary.Total, ["fraction"] = Summary.Fraction };
        return (tensors, o.ToJsonString());
    }

    /// <summary>Reads the <see cref="LoraConfig"/> back from <see cref="SaveState"/>'s ConfigJson.</summary>
    public static LoraConfig ConfigFromStateJson(string configJson) => LoraConfig.FromJson(configJson);

    public void LoadState(IReadOnlyDictionary<string, Tensor> tensors)
    {
        var expected = TrainableParameters;
        foreach (var (name, p) in expected)
        {
            if (!tensors.TryGetValue(name, out var t))
                throw new InvalidDataException($"LoRA state is missing tensor '{name}' [{string.Join(",", p.shape)}]");
            if (!t.shape.SequenceEqual(p.shape))
                throw new InvalidDataException($"LoRA tensor '{name}' has shape [{string.Join(",", t.shape)}] but the model expects [{string.Join(",", p.shape)}]");
        }
        var extra = tensors.Keys.Except(expected.Select(e => e.Name)).ToList();
        if (extra.Count > 0) throw new InvalidDataException($"LoRA state has unexpected tensor(s): {string.Join(", ", extra.Take(5))}");
        using var _ = torch.no_grad();
        foreach (var (name, p) in expected) p.copy_(tensors[name]);
    }

    /// <summary>
    /// Folds s·B·A into each adapted weight (W is [out, in] in our models, GPT-2 Conv1D included, so no transpose is
    /// needed here; CausalLMFactory.SavePretrained transposes Conv1D weights back to HF's [in, out] on export) and
    /// disables the adapters, so the forward pass costs the same as the base model's.
    /// </summary>
    public void Merge()
    {
        _ = Model;
        if (IsMerged) return;
        using var _g = torch.no_grad();
        foreach (var (_, l, a) in _targets)
        {
            using var scope = torch.NewDisposeScope();
            l.weight.add_(a.DeltaWeight().to_type(l.weight.dtype));
            l.AdapterEnabled = false;
        }
        IsMerged = true;
    }

    /// <summary>Subtracts what <see cref="Merge"/> added and re-enables the adapters (W is restored up to float rounding).</summary>
    public void Unmerge()
    {
        _ = Model;
        if (!IsMerged) return;
        using var _g = torch.no_grad();
        foreach (var (_, l, a) in _targets)
        {
            using var scope = torch.NewDisposeScope();
            l.weight.sub_(a.DeltaWeight().to_type(l.weight.dtype));
            l.AdapterEnabled = true;
        }
        IsMerged = false;
    }

    /// <summary>
    /// Merges and then removes the adapters from the layers, leaving a plain model with the adapted weights (e.g. for
    /// <c>CausalLMFactory.SavePretrained</c>). The method is spent afterwards: it has no targets.
    /// </summary>
    public void MergeAndUnload()
    {
        Merge();
        foreach (var (_, l, a) in _targets)
        {
            l.Adapter = null;
            l.AdapterEnabled = true;
            a.Dispose();
        }
        _targets.Clear();
        IsMerged = false;
    }
}
