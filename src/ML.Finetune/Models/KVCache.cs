using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>
/// Per-layer key/value states, each [B, n_kv_heads, S, head_dim]. Keys are stored after RoPE, so entries that are
/// pre-filled (prefix tuning) are used exactly as given. Appending uses torch.cat, which keeps autograd, so
/// pre-filled tensors that require grad receive gradients.
/// </summary>
public sealed class KVCache : IDisposable
{
    readonly Tensor?[] _keys, _values;
    readonly bool[] _owned; // we dispose only tensors we created (cat results), never caller-provided prefixes

    public KVCache(int numLayers)
    {
        _keys = new Tensor?[numLayers];
        _values = new Tensor?[numLayers];
        _owned = new bool[numLayers];
    }

    public int NumLayers => _keys.Length;

    /// <summary>Cached sequence length (0 when empty); taken from layer 0.</summary>
    public long Length => _keys[0]?.shape[2] ?? 0;

    public Tensor? Keys(int layer) => _keys[layer];
    public Tensor? Values(int layer) => _values[layer];

    /// <summary>
    /// Builds a cache pre-filled with per-layer prefixes. Each key/value is [n_kv, P, D] (shared by all rows,
    /// expanded to <paramref name="batch"/>) or already [B, n_kv, P, D].
    /// </summary>
    public static KVCache FromPrefix(IReadOnlyList<Tensor> keys, IReadOnlyList<Tensor> values, int batch)
    {
        if (keys.Count != values.Count) throw new ArgumentException("keys and values must have one entry per layer");
        var c = new KVCache(keys.Count);
        for (int l = 0; l < keys.Count; l++)
        {
            c._keys[l] = Expand(keys[l], batch);
            c._values[l] = Expand(values[l], batch);
            c._owned[l] = true; // expand() makes new handles (views); the caller keeps its own
        }
        return c;
    }

    static Tensor Expand(Tensor t, int batch) => t.dim() switch
    {
        3 => t.unsqueeze(0).expand(batch, -1, -1, -1).DetachFromDisposeScope(),
        4 when t.shape[0] == batch => t.alias().DetachFromDisposeScope(),
        _ => throw new ArgumentException($"prefix tensor must be [n_kv, P, D] or [{batch}, n_kv, P, D], got [{string.Join(",", t.shape)}]"),
    };

    /// <summary>Appends new states for a layer and returns the full keys and values.</summary>
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
        _keys[layer] = nk.DetachFromDisposeScope();
        _values[layer] = nv.DetachFromDisposeScope();
        _owned[layer] = true;
        return (nk, nv);
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
