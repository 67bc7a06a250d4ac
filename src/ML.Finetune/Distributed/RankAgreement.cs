using System.Globalization;
using System.Runtime.InteropServices;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Distributed;

/// <summary>
/// Checks that every rank runs the same job. Ranks that disagree about the options, the data or the trainable
/// parameters would not hang (the bucket sizes still match) but would silently train different models, so the
/// trainer compares fingerprints before the first step and the weights' checksums after the last.
/// </summary>
internal static class RankAgreement
{
    /// <summary>Throws a <see cref="DistributedException"/> on every rank when some rank's setup differs from rank 0's.</summary>
    public static void CheckSameRun(Communicator comm, TrainerOptions options, string method, int totalSteps, long padId,
        IReadOnlyList<(string Name, Tensor Parameter)> parameters, IReadOnlyList<EncodedExample> train,
        IReadOnlyList<EncodedExample>? validation, IReadOnlyList<long[]>? referenceTexts)
    {
        var setup = new Fnv();
        // Every option that shapes the computation; the checkpoint folder may differ (only rank 0 writes it).
        foreach (var p in typeof(TrainerOptions).GetProperties().Where(p => p.Name != nameof(TrainerOptions.CheckpointFolder)).OrderBy(p => p.Name))
            setup.Add($"{p.Name}={Convert.ToString(p.GetValue(options), CultureInfo.InvariantCulture)};");
        setup.Add($"method={method};steps={totalSteps};pad={padId};");
        var data = new Fnv();
        foreach (var set in new[] { train, validation ?? [] })
        {
            data.Add(set.Count);
            foreach (var e in set)
            {
                data.Add(e.InputIds); data.Add(e.Labels);
                if (e.SequenceLengths is { } lengths) data.Add(string.Join(",", lengths)); // packed rows: where each sequence starts
            }
        }
        foreach (var t in referenceTexts ?? []) data.Add(t);
        var shapes = new Fnv();
        foreach (var (name, p) in parameters) shapes.Add($"{name}:{p.dtype}[{string.Join(",", p.shape)}];");
        Compare(comm, [("options", setup.Value), ("training, validation or reference data", data.Value), ("trainable parameters", shapes.Value)],
            "every rank must call Fit/Train with the same options and the same data (each rank reads the whole IDataView and takes its own shard)");
    }

    /// <summary>Throws when the trainable weights are no longer bitwise equal on every rank.</summary>
    public static void CheckSameWeights(Communicator comm, IReadOnlyList<(string Name, Tensor Parameter)> parameters) =>
        Compare(comm, [("trainable weights", WeightsChecksum(parameters))],
            "the ranks applied different updates (every rank must apply the same all-reduced step); this is a bug, please report it");

    /// <summary>A 64-bit checksum of the parameters' bytes (FNV-1a over 8-byte words).</summary>
    public static long WeightsChecksum(IReadOnlyList<(string Name, Tensor Parameter)> parameters)
    {
        var h = new Fnv();
        using var _ = torch.no_grad();
        foreach (var (_, p) in parameters)
        {
            using var scope = torch.NewDisposeScope();
            var t = p.device_type == DeviceType.CPU && p.is_contiguous() ? p.view(-1) : p.cpu().contiguous().view(-1);
            long chunk = (1L << 30) / t.element_size(); // a Span's length is an int
            for (long start = 0; start < t.numel(); start += chunk) h.AddWords(t.narrow(0, start, Math.Min(chunk, t.numel() - start)).bytes);
            h.Add(t.numel());
        }
        return h.Value;
    }

    static void Compare(Communicator comm, (string What, long Value)[] mine, string hint)
    {
        var bytes = MemoryMarshal.AsBytes(mine.Select(m => m.Value).ToArray().AsSpan()).ToArray();
        var all = comm.AllGather(bytes).Select(b => MemoryMarshal.Cast<byte, long>(b).ToArray()).ToArray();
        var problems = new List<string>();
        for (int k = 0; k < mine.Length; k++)
        {
            var differ = Enumerable.Range(1, comm.Size - 1).Where(r => all[r][k] != all[0][k]).ToList();
            if (differ.Count > 0) problems.Add($"the {mine[k].What} of rank{(differ.Count > 1 ? "s" : "")} {string.Join(", ", differ)} differ from rank 0's");
        }
        if (problems.Count > 0) throw new DistributedException($"data-parallel ranks disagree: {string.Join("; ", problems)}. {char.ToUpperInvariant(hint[0])}{hint[1..]}.");
    }

    /// <summary>FNV-1a, 64 bit (deterministic across processes, unlike string.GetHashCode).</summary>
    sealed class Fnv
    {
        public long Value => unchecked((long)_h);
        ulong _h = 14695981039346656037UL;
        const ulong Prime = 1099511628211UL;
        void Mix(ulong v) { _h ^= v; _h = unchecked(_h * Prime); }
        public void Add(long v) => Mix((ulong)v);
        public void Add(string s) { foreach (char c in s) Mix(c); }
        public void Add(long[] values) { Add(values.Length); foreach (var v in values) Mix((ulong)v); }
        public void AddWords(ReadOnlySpan<byte> bytes)
        {
            var words = MemoryMarshal.Cast<byte, ulong>(bytes);
            foreach (var w in words) Mix(w);
            for (int i = words.Length * 8; i < bytes.Length; i++) Mix(bytes[i]);
        }
    }
}
