using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Distributed;

/// <summary>
/// The trainable parameters laid out in a few flat host buffers ("buckets", at most <see cref="BucketElements"/>
/// elements each; float64 parameters in float64 buckets, every other dtype in float32 ones), so that a step's
/// gradients cross the network in a few large collectives instead of one call per tensor.
/// <para>Gradients (and the parameters, for the start-of-run broadcast) are copied into a reused staging buffer,
/// reduced there and copied back. That host copy is the CPU path; on GPUs a CUDA-aware MPI would take the device
/// pointer of a device-side staging buffer directly, and NCCL's ncclAllReduce would replace the MPI call on it
/// (docs/distributed.md).</para>
/// </summary>
internal sealed class ParameterBuckets : IDisposable
{
    /// <summary>16 Mi elements: 64 MiB per float32 bucket (GPT-2 small's 124 M parameters: 7 buckets per step).</summary>
    public const long BucketElements = 1L << 24;

    readonly Communicator _comm;
    readonly IReadOnlyList<(string Name, Tensor Parameter)> _parameters;
    readonly List<(int[] Indices, long Elements, ScalarType DType)> _buckets = new();
    readonly Dictionary<ScalarType, Tensor> _staging = new();

    public ParameterBuckets(Communicator comm, IReadOnlyList<(string Name, Tensor Parameter)> parameters, long bucketElements = BucketElements)
    {
        _comm = comm; _parameters = parameters;
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            var current = new List<int>(); long elements = 0;
            for (int i = 0; i < parameters.Count; i++)
            {
                if (StagingType(parameters[i].Parameter) != dtype) continue;
                long n = parameters[i].Parameter.numel();
                if (current.Count > 0 && elements + n > bucketElements) { _buckets.Add((current.ToArray(), elements, dtype)); current.Clear(); elements = 0; }
                current.Add(i); elements += n;
            }
            if (current.Count > 0) _buckets.Add((current.ToArray(), elements, dtype));
        }
    }

    public int BucketCount => _buckets.Count;
    /// <summary>Bytes one rank contributes to a gradient all-reduce.</summary>
    public long Bytes => _buckets.Sum(b => b.Elements * (b.DType == ScalarType.Float64 ? 8 : 4));

    static ScalarType StagingType(Tensor p) => p.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;

    /// <summary>
    /// Sums <paramref name="scalars"/> and every parameter's gradient over the ranks (in place). A parameter without a
    /// gradient on this rank (no rows in its shard) contributes zeros; one without a gradient on every rank keeps none,
    /// exactly as in one process (an optimizer skips such a parameter).
    /// </summary>
    public void AllReduceGradients(Span<double> scalars)
    {
        var grads = _parameters.Select(p => p.Parameter.grad).ToArray(); // each .grad read wraps a new tensor: read once
        var sums = new double[scalars.Length + grads.Length];
        scalars.CopyTo(sums);
        for (int i = 0; i < grads.Length; i++) sums[scalars.Length + i] = grads[i] is null ? 0 : 1;
        _comm.AllReduce(sums);
        sums.AsSpan(0, scalars.Length).CopyTo(scalars);

        using var _ = torch.no_grad();
        foreach (var (indices, elements, dtype) in _buckets)
        {
            using var scope = torch.NewDisposeScope();
            var flat = Staging(dtype, elements);
            long offset = 0;
            foreach (int i in indices)
            {
                var part = flat.narrow(0, offset, _parameters[i].Parameter.numel());
                if (grads[i] is Tensor g) part.copy_(g.reshape(-1)); else part.zero_();
                offset += part.numel();
            }
            Reduce(flat, dtype);
            offset = 0;
            foreach (int i in indices)
            {
                var p = _parameters[i].Parameter;
                var part = flat.narrow(0, offset, p.numel()).view(p.shape);
                offset += p.numel();
                if (sums[scalars.Length + i] == 0) continue;
                if (grads[i] is Tensor g) g.copy_(part);
                else p.grad = part.to(p.dtype, p.device).clone(); // the parameter keeps its own reference
            }
        }
        foreach (var g in grads) g?.Dispose();
    }

    /// <summary>Copies rank 0's parameter values into every other rank's parameters (an identical start).</summary>
    public void BroadcastFromRoot()
    {
        using var _ = torch.no_grad();
        foreach (var (indices, elements, dtype) in _buckets)
        {
            using var scope = torch.NewDisposeScope();
            var flat = Staging(dtype, elements);
            long offset = 0;
            if (_comm.IsRoot)
                foreach (int i in indices) { var p = _parameters[i].Parameter; flat.narrow(0, offset, p.numel()).copy_(p.reshape(-1)); offset += p.numel(); }
            _comm.Broadcast(flat.bytes);
            offset = 0;
            foreach (int i in indices)
            {
                var p = _parameters[i].Parameter;
                if (!_comm.IsRoot) p.copy_(flat.narrow(0, offset, p.numel()).view(p.shape));
                offset += p.numel();
            }
        }
    }

    void Reduce(Tensor flat, ScalarType dtype)
    {
        if (dtype == ScalarType.Float64) _comm.AllReduce(MemoryMarshal.Cast<byte, double>(flat.bytes));
        else _comm.AllReduce(MemoryMarshal.Cast<byte, float>(flat.bytes));
    }

    /// <summary>The first <paramref name="elements"/> of this dtype's reused host buffer (sized for the largest bucket).</summary>
    Tensor Staging(ScalarType dtype, long elements)
    {
        if (!_staging.TryGetValue(dtype, out var buffer))
        {
            long largest = _buckets.Where(b => b.DType == dtype).Max(b => b.Elements);
            _staging[dtype] = buffer = torch.empty(largest, dtype: dtype).DetachFromDisposeScope();
        }
        return buffer.narrow(0, 0, elements);
    }

    public void Dispose() { foreach (var t in _staging.Values) t.Dispose(); _staging.Clear(); }
}
