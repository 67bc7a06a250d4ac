using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>
/// Per-layer key/value states, each [B, n_kv_heads, S, head_dim]. Keys are stored after RoPE, so entries that are
/// pre-filled (prefix tuning) are used exactly as given. Appending uses torch.cat, which keeps autograd, so
/// pre-filled tensors that require grad receive gradients.
/// <para>
/// A layer with a sliding window W (<see cref="CausalLM.NewCache"/> passes the model's windows) keeps only its last
/// W−1 entries after each append, as transformers' sliding-window cache layers do: the next query sits one position
/// further on, so older keys can never be visible again. <see cref="Length"/> counts every position seen, which is
/// what positions and attention masks refer to; <see cref="StoredLength"/> is what a layer still holds.
/// </para>
/// </summary>
public sealed class KVCache : IDisposable
{
    readonly Tensor?[] _keys, _values;
    readonly bool[] _owned; // we dispose only tensors we created (cat results), never caller-provided prefixes
    readonly long[] _seen;
    readonly int?[] _windows;

    /// <param name="windows">Per layer the attention window, or null (no window on any layer).</param>
    public KVCache(int numLayers, IReadOnlyList<int?>? windows = null)
    {
        if (windows is not null && windows.Count != numLayers) throw new ArgumentException($"{windows.Count} windows for {numLayers} layers", nameof(windows));
        _keys = new Tensor?[numLayers];
        _values = new Tensor?[numLayers];
        _owned = new bool[numLayers];
        _seen = new long[numLayers];
        _windows = windows?.ToArray() ?? new int?[numLayers];
    }

    public int NumLayers => _keys.Length;

    /// <summary>Positions seen so far (prefix included), the past length of the next forward; taken from layer 0.</summary>
    public long Length => _seen[0];

    /// <summary>Entries layer <paramref name="layer"/> holds (≤ <see cref="Length"/> on a sliding layer).</summary>
    public long StoredLength(int layer) => _keys[layer]?.shape[2] ?? 0;

    /// <summary>The attention window of a layer (null = all keys are kept).</summary>
    public int? Window(int layer) => _windows[layer];

    public Tensor? Keys(int layer) => _keys[layer];
    public Tensor? Values(int layer) => _values[layer];

    /// <summary>
    /// Builds a cache pre-filled with per-layer prefixes. Each key/value is [n_kv, P, D] (shared by all rows,
    /// expanded to <paramref name="batch"/>) or already [B, n_kv, P, D].
    /// </summary>
    public static KVCache FromPrefix(IReadOnlyList<Tensor> keys, IReadOnlyList<Tensor> values, int batch, IReadOnlyList<int?>? windows = null)
    {
        if (keys.Count != values.Count) throw new ArgumentException("keys and values must have one entry per layer");
        var c = new KVCache(keys.Count, windows);
        for (int l = 0; l < keys.Count; l++)
        {
            c._keys[l] = Expand(keys[l], batch);
            c._values[l] = Expand(values[l], batch);
            c._owned[l] = true; // expand() makes new handles (views); the caller keeps its own
            c._seen[l] = c._keys[l]!.shape[2];
        }
        return c;
    }

    /// <summary>
    /// A cache whose layer <paramref name="layer"/> holds <paramref name="keys"/>/<paramref name="values"/>
    /// ([B, n_kv, S, D], used as given and never disposed by the cache) and whose other layers are empty: what
    /// recomputing one layer of a forward needs (<see cref="LayerCheckpoint"/>).
    /// </summary>
    public static KVCache ForLayer(int numLayers, int layer, Tensor? keys, Tensor? values, IReadOnlyList<int?>? windows = null)
    {
        var c = new KVCache(numLayers, windows);
        c._keys[layer] = keys;
        c._values[layer] = values;
        c._seen[layer] = keys?.shape[2] ?? 0;
        return c;
    }

    static Tensor Expand(Tensor t, int batch) => t.dim() switch
    {
        3 => t.unsqueeze(0).expand(batch, -1, -1, -1).DetachFromDisposeScope(),
        4 when t.shape[0] == batch => t.alias().DetachFromDisposeScope(),
        _ => throw new ArgumentException($"prefix tensor must be [n_kv, P, D] or [{batch}, n_kv, P, D], got [{string.Join(",", t.shape)}]"),
    };

    /// <summary>Appends new states for a layer and returns the full keys and values this forward attends over.</summary>
    public (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        Tensor nk, nv;
        if (_keys[layer] is Tensor ok && _values[layer] is Tensor ov)
        {
            // A float32 trained prefix over a bf16/fp16 base is cast (differentiably) to the states' dtype, as
            // autocast would; torch.cat would otherwise promote the whole cache to float32.
            nk = torch.cat([ok.dtype == k.dtype ? ok : ok.to_type(k.dtype), k], 2);
            nv = torch.cat([ov.dtype == v.dtype ? ov : ov.to_type(v.dtype), v], 2);
            if (_owned[layer]) { ok.Dispose(); ov.Dispose(); }
        }
        else
        {
            nk = k.alias();
            nv = v.alias();
        }
        _seen[layer] += k.shape[2];
        long keep = _windows[layer] is int w ? Math.Min(w - 1, nk.shape[2]) : nk.shape[2];
        _keys[layer] = Tail(nk, keep).DetachFromDisposeScope();
        _values[layer] = Tail(nv, keep).DetachFromDisposeScope();
        _owned[layer] = true;
        return (nk, nv);
    }

    static Tensor Tail(Tensor t, long keep) => keep == t.shape[2] ? t.alias() : t.narrow(2, t.shape[2] - keep, keep);

    /// <summary>
    /// Drops every entry (the cache is empty again, windows kept); with <paramref name="prefill"/>, takes over that
    /// cache's entries instead (a fresh prefix), leaving it empty. Used when cached keys become stale.
    /// </summary>
    public void Reset(KVCache? prefill = null)
    {
        if (prefill is not null && prefill.NumLayers != NumLayers) throw new ArgumentException($"{prefill.NumLayers} prefix layers for {NumLayers}", nameof(prefill));
        for (int l = 0; l < NumLayers; l++)
        {
            if (_owned[l]) { _keys[l]?.Dispose(); _values[l]?.Dispose(); }
            (_keys[l], _values[l], _owned[l], _seen[l]) = prefill is null ? (null, null, false, 0) : (prefill._keys[l], prefill._values[l], prefill._owned[l], prefill._seen[l]);
            if (prefill is not null) (prefill._keys[l], prefill._values[l], prefill._owned[l], prefill._seen[l]) = (null, null, false, 0);
        }
        prefill?.Dispose();
    }

    /// <summary>Keeps only the given batch rows (used to drop finished rows during generation).</summary>
    public void SelectRows(Tensor rowIndex)
    {
        for (int l = 0; l < NumLayers; l++)
        {
            if (_keys[l] is not Tensor k || _values[l] is not Tensor v) continue;
            var nk = k.index_select(0, rowIndex).DetachFromDisposeScope();
            var nv = v.index_select(0, rowIndex).DetachFromDisposeScope();
            if (_owned[l]) { k.Dispose(); v.Dispose(); }
            _keys[l] = nk; _values[l] = nv; _owned[l] = true;
        }
    }

    public void Dispose()
    {
        for (int l = 0; l < NumLayers; l++)
        {
            if (_owned[l]) { _keys[l]?.Dispose(); _values[l]?.Dispose(); }
            _keys[l] = _values[l] = null;
        }
    }
}
