using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

/// <summary>
/// Full finetuning ("full"): every parameter of the model trains (a tied head/embedding matrix once). Keeps θ_p for
/// ‖θ−θ_p‖²: for weights the loader left as the mapped checkpoint, a second mapping of the file (page cache, no
/// anonymous memory; the file must not be changed in place while training runs, as for mapped weights generally),
/// otherwise a frozen detached copy on the model's device (<see cref="PretrainedCopyBytes"/>). The KL runs θ_p as a
/// model built on those same tensors (<see cref="PretrainedCopy"/>: no further copy).
/// SaveState holds every weight under its HF name, so a fully finetuned model is self-contained.
/// </summary>
public sealed class FullFinetuneMethod : IFinetuneMethod, IDisposable
{
    public const string MethodName = "full";
    private List<(string Name, Tensor Parameter)> _params = new();
    private List<Tensor> _pretrained = new();
    private CausalLM? _copy;

    public string Name => MethodName;

    public void Attach(CausalLM model, long seed)
    {
        ArgumentNullException.ThrowIfNull(model);
        DisposeCopies();
        var seen = new HashSet<IntPtr>();
        _params = new();
        foreach (var (name, p) in model.named_parameters())
        {
            if (!seen.Add(p.Handle)) continue; // tied weights once
            p.requires_grad = true;
            _params.Add((name, p));
        }
        _pretrained = new();
        PretrainedCopyBytes = 0;
        var files = new Dictionary<string, Checkpoints.SafeTensorsMapping?>();
        try
        {
            using (torch.no_grad())
                foreach (var (name, p) in _params)
                {
                    var mapped = model.MappedWeights.TryGetValue(name, out var source) ? MapAgain(source, files, p) : null;
                    _pretrained.Add(mapped ?? p.detach().clone().DetachFromDisposeScope());
                    if (mapped is null) PretrainedCopyBytes += p.NumberOfElements * p.ElementSize;
                }
        }
        finally { foreach (var f in files.Values) f?.Dispose(); }
    }

    /// <summary>
    /// Bytes of θ_p held as copies. A parameter that the loader left as the mapped checkpoint file (and that still
    /// equals it) gets θ_p as a second mapping of that file: pages shared with the page cache, which the kernel can drop
    /// and re-read, instead of an anonymous copy (2 bytes per parameter in bf16, 4 in float32).
    /// </summary>
    public long PretrainedCopyBytes { get; private set; }

    /// <summary>θ_p of a parameter that was loaded as the mapped file: the file mapped again, if it still holds the
    /// parameter's current values (checked, not assumed: the weights may have been changed since loading); else null.
    /// Each file is opened once per Attach (<paramref name="files"/>; null = could not be opened).</summary>
    static Tensor? MapAgain(Checkpoints.MappedWeight source, Dictionary<string, Checkpoints.SafeTensorsMapping?> files, Tensor parameter)
    {
        if (!files.TryGetValue(source.Path, out var file))
        {
            try { file = Checkpoints.SafeTensorsMapping.Open(source.Path); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or Checkpoints.CheckpointFormatException) { file = null; }
            files[source.Path] = file;
        }
        var again = file is null ? null : source.MapAgain(file);
        if (again is null) return null;
        bool same = again.dtype == parameter.dtype && again.shape.SequenceEqual(parameter.shape) && FusedCpuKernels.IsAddressable(parameter)
                    && FusedCpuKernels.SumOfSquaredDifferences([parameter], [again]) == 0; // one pass, no temporaries (NaN: not equal)
        if (same) return again.DetachFromDisposeScope();
        again.Dispose();
        return null;
    }

    public IReadOnlyList<(string Name, Tensor Parameter)> TrainableParameters => _params;

    public Tensor HiddenStates(CausalLM model, Tensor inputIds, Tensor attentionMask, SequencePacking? packing = null) =>
        model.ForwardHidden(new CausalLMInput
        {
            InputIds = inputIds, AttentionMask = attentionMask, PositionIds = packing?.PositionIds, SequenceIds = packing?.SequenceIds,
        }).LastHiddenState;

    /// <summary>Null: the weights change, so θ_p is <see cref="PretrainedCopy"/>.</summary>
    public IDisposable? UsePretrained(CausalLM model) => null;

    /// <summary>
    /// θ_p as a frozen model whose parameters are the θ_p tensors this method keeps for the distance (built once on the
    /// meta device, then pointed at them): no memory beyond that copy. Its outputs are the model's before training.
    /// </summary>
    public CausalLM PretrainedCopy(CausalLM model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (_params.Count == 0) throw new InvalidOperationException("Attach must be called first.");
        if (_copy is not null) return _copy;
        var byName = _params.Select((p, i) => (p.Name, Weight: _pretrained[i])).ToDictionary(p => p.Name, p => p.Weight);
        var copy = Runtime.MetaConstruction.Build(() => CausalLMFactory.Create(model.Config));
        Runtime.ModuleMaterializer.Materialize(copy, (name, _) => byName.TryGetValue(name, out var w) ? w.detach().DetachFromDisposeScope() // a new handle on the same storage, owned by the copy
            : throw new InvalidOperationException($"the model has no trained parameter '{name}' for the frozen θ_p copy"));
        foreach (var p in copy.parameters()) p.requires_grad = false;
        copy.eval();
        return _copy = copy;
    }

    public Tensor DistanceFromPretrainedSquared()
    {
        if (_params.Count == 0) throw new InvalidOperationException("Attach must be called first.");
        var weights = _params.Select(p => p.Parameter).ToList();
        // Reported only (no graph): one fused pass, no temporaries the size of the model.
        if (!torch.is_grad_enabled() && weights.Concat(_pretrained).All(FusedCpuKernels.IsAddressable))
            return torch.tensor(FusedCpuKernels.SumOfSquaredDifferences(weights, _pretrained), dtype: ScalarType.Float32, device: weights[0].device);
        Tensor? sum = null;
        for (int i = 0; i < _params.Count; i++)
        {
            var (w, w0) = (weights[i], _pretrained[i]);
            // bf16 weights: difference and sum in float32 (a bf16 sum of squares would lose most of its digits).
            if (w.dtype == ScalarType.BFloat16) { w = w.to_type(ScalarType.Float32); w0 = w0.to_type(ScalarType.Float32); }
            var s = w.sub(w0).square().sum();
            sum = sum is null ? s : sum.add(s);
        }
        return sum!;
    }

    public GenerationPrefix? GetGenerationPrefix(CausalLM model) => null;

    public (IReadOnlyDictionary<string, Tensor> Tensors, string ConfigJson) SaveState() =>
        (_params.ToDictionary(p => p.Name, p => p.Parameter.detach().cpu().contiguous()), "{}");

    public void LoadState(IReadOnlyDictionary<string, Tensor> tensors)
    {
        if (_params.Count == 0) throw new InvalidOperationException("Attach must be called first.");
        using (torch.no_grad())
        {
            foreach (var (name, p) in _params)
            {
                if (!tensors.TryGetValue(name, out var t)) throw new InvalidDataException($"Saved full-finetuning state has no tensor '{name}'.");
                if (!t.shape.SequenceEqual(p.shape))
                    throw new InvalidDataException($"Saved tensor '{name}' has shape [{string.Join(",", t.shape)}]; the model expects [{string.Join(",", p.shape)}].");
                p.copy_(t);
            }
            for (int i = 0; i < _params.Count; i++) _pretrained[i].copy_(_params[i].Parameter);
        }
    }

    private void DisposeCopies()
    {
        _copy?.Dispose(); _copy = null;
        foreach (var t in _pretrained) t.Dispose();
        _pretrained.Clear();
    }
    public void Dispose() => DisposeCopies();
}
