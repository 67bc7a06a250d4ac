namespace ML.Finetune.Distributed;

/// <summary>
/// How data parallelism splits work. Every rank holds the whole data set and walks the same seeded order; the
/// training loop's BatchSize is the GLOBAL batch, and each rank takes one contiguous shard of every global batch, so
/// N ranks compute the same objective and the same update as one process (up to float summation order).
/// </summary>
public static class DataParallel
{
    /// <summary>
    /// Rows [Start, Start + Count) of <paramref name="count"/> that <paramref name="rank"/> of <paramref name="size"/> takes:
    /// contiguous, sizes differ by at most one, lower ranks take the extra rows (so rank 0 is never empty when count ≥ 1;
    /// a rank is empty when count &lt; size).
    /// </summary>
    public static (int Start, int Count) ShardRange(int count, int rank, int size)
    {
        if (size < 1 || rank < 0 || rank >= size) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} of {size}");
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count));
        int share = count / size, extra = count % size;
        return (rank * share + Math.Min(rank, extra), share + (rank < extra ? 1 : 0));
    }

    /// <summary>This rank's shard of <paramref name="items"/> (all of them in a single process).</summary>
    public static IReadOnlyList<T> Shard<T>(IReadOnlyList<T> items, Communicator comm)
    {
        if (!comm.IsDistributed) return items;
        var (start, count) = ShardRange(items.Count, comm.Rank, comm.Size);
        var shard = new T[count];
        for (int i = 0; i < count; i++) shard[i] = items[start + i];
        return shard;
    }

    /// <summary>
    /// The seed of torch's generator (dropout) on <paramref name="rank"/>: the run's seed on rank 0, so one process is
    /// unchanged, and a different stream on every other rank (ranks draw masks for different examples; equal seeds
    /// would give every rank's k-th example the same mask).
    /// </summary>
    public static long TorchSeed(long seed, int rank) => rank == 0 ? seed : unchecked(seed + rank * (long)0x9E3779B97F4A7C15);
}
