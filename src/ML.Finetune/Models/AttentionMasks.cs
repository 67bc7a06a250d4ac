using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Models;

/// <summary>
/// The attention masks of one forward, built in one place. Query i (absolute index past + i) may see key j when
/// <list type="bullet">
/// <item>j ≤ past + i (causal) and the attention mask marks key j as real (padding);</item>
/// <item>on a layer with window W: j &gt; past + i − W (W keys, the query's own included; HF counts sequence indices,
///   not position ids);</item>
/// <item>with <see cref="CausalLMInput.SequenceIds"/>: both carry the same id (packed sequences attend only within
///   their own sequence). A past given as a shared prefix (<see cref="CausalLMInput.PastIsSharedPrefix"/>) is visible
///   to every sequence, and windows count each query from the prefix through its own sequence (its index there is
///   past + its offset in the sequence), so every sequence sees what it would see alone after the prefix.</item>
/// </list>
/// A layer whose KV cache dropped keys that left its window (see <see cref="KVCache"/>) gets the same mask restricted
/// to the keys it still holds. Masks are additive, 0 or finfo(dtype).min (finite, so fully masked pad rows stay
/// finite instead of NaN), [B, 1, T, keys]; each distinct window is built once per forward.
/// </summary>
public sealed class AttentionMasks
{
    readonly Tensor _mask2d;
    readonly Tensor? _sequenceIds;
    readonly long _past, _t;
    readonly ScalarType _dtype;
    readonly bool _noPadding;
    readonly Dictionary<int, Tensor> _byWindow = new(); // key: window, or 0 for full attention
    // Masks are built lazily, possibly inside a layer's own dispose scope (LayerCheckpoint); they belong to the scope
    // this object was made in, which the anchor marks, so they live as long as the forward's other tensors. (Detached
    // first: TorchSharp 0.107's move into the scope a tensor is already in drops it from that scope's list.)
    readonly Tensor _anchor = torch.empty(0);

    /// <param name="mask2d">[B, past + T], 1 = a real key.</param>
    /// <param name="sequenceIds">[B, T] or null; with a past only when <paramref name="pastIsSharedPrefix"/>.</param>
    public AttentionMasks(Tensor mask2d, long past, long t, ScalarType dtype, Tensor? sequenceIds = null, bool pastIsSharedPrefix = false)
    {
        if (sequenceIds is not null && past != 0 && !pastIsSharedPrefix)
            throw new ArgumentException($"SequenceIds (sequence packing) cannot be combined with a non-empty KV cache (it holds {past} positions) " +
                                        "unless the cache is a prefix shared by every sequence (PastIsSharedPrefix)");
        _mask2d = mask2d; _past = past; _t = t; _dtype = dtype; _sequenceIds = sequenceIds;
        _noPadding = mask2d.ne(0).all().item<bool>();
    }

    /// <summary>
    /// True when the causal structure alone is the mask for a layer with this window: no past, no padding, no
    /// sequence ids, and a window (if any) that covers the whole sequence.
    /// </summary>
    public bool IsPlainCausal(int? window) =>
        _past == 0 && _noPadding && _sequenceIds is null && (window is null || window >= _t);

    /// <summary>
    /// The additive mask [B, 1, T, <paramref name="keys"/>] of a layer with this window that attends over the last
    /// <paramref name="keys"/> of the past + T positions (fewer than all when its cache dropped keys outside the
    /// window), or null when <paramref name="allowImplicitCausal"/> (the fused kernel applies causality itself) and
    /// <see cref="IsPlainCausal"/>.
    /// </summary>
    public Tensor? For(int? window, long keys, bool allowImplicitCausal)
    {
        if (allowImplicitCausal && IsPlainCausal(window)) return null;
        int key = window ?? 0;
        if (!_byWindow.TryGetValue(key, out var full)) _byWindow[key] = full = Build(window).DetachFromDisposeScope().MoveToOtherDisposeScope(_anchor);
        long total = full.shape[^1];
        if (keys > total) throw new ArgumentException($"{keys} keys but the attention mask covers {total} positions");
        return keys == total ? full : full.narrow(-1, total - keys, keys);
    }

    Tensor Build(int? window)
    {
        var dev = _mask2d.device;
        long s = _mask2d.shape[1];
        var q = torch.arange(_past, _past + _t, dtype: ScalarType.Int64, device: dev).unsqueeze(1); // [T,1] absolute query index
        var k = torch.arange(0, s, dtype: ScalarType.Int64, device: dev).unsqueeze(0);            // [1,S]
        Tensor allowed; // [B or 1, 1, T, S]
        if (_sequenceIds is null)
        {
            allowed = k.le(q);
            if (window is int w) allowed = allowed.logical_and(k.gt(q.sub(w)));
            allowed = allowed.unsqueeze(0).unsqueeze(0);
        }
        else
        {
            // Each sequence on its own: a query sees the (shared) past and the earlier tokens of its sequence, and its
            // index for the window is past + its offset in the sequence (for past 0 the same rule as row indices).
            var same = _sequenceIds.unsqueeze(2).eq(_sequenceIds.unsqueeze(1));                   // [B,T,T]
            var own = same.logical_and(torch.ones(_t, _t, dtype: ScalarType.Bool, device: dev).tril()); // same sequence, key ≤ query
            var index = own.sum(-1, type: ScalarType.Int64).sub(1).add(_past);                    // [B,T] query index within its sequence
            long b = _sequenceIds.shape[0];
            allowed = torch.cat([torch.ones(b, _t, _past, dtype: ScalarType.Bool, device: dev), own], -1); // [B,T,S]
            if (window is int w)
            {
                var keyIndex = torch.cat([torch.arange(0, _past, dtype: ScalarType.Int64, device: dev).unsqueeze(0).expand(b, -1), index], 1); // [B,S]
                allowed = allowed.logical_and(keyIndex.unsqueeze(1).gt(index.unsqueeze(2).sub(w)));
            }
            allowed = allowed.unsqueeze(1);
        }
        var visible = allowed.logical_and(_mask2d.to_type(ScalarType.Bool).unsqueeze(1).unsqueeze(1)); // [B,1,T,S]
        var zero = torch.zeros(1, dtype: _dtype, device: dev);
        var min = torch.full(1, torch.finfo(_dtype).min, dtype: _dtype, device: dev);
        return torch.where(visible, zero, min);
    }
}
