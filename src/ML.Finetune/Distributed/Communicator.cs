namespace ML.Finetune.Distributed;

public enum ReduceOperation { Sum, Min, Max }

/// <summary>Time and bytes this process spent in collectives (since start, or since <see cref="Communicator.ResetStats"/>).</summary>
public sealed record CommunicationStats(long Calls, long Bytes, double Seconds);

/// <summary>
/// The processes of a data-parallel job and the collectives the training loop needs. <see cref="World"/> is the job
/// this process belongs to: under <c>mpirun -np N</c> (N &gt; 1) an MPI communicator over Open MPI, otherwise
/// <see cref="SingleProcess"/>, whose collectives return their input unchanged, so a single process runs exactly
/// the code it ran before data parallelism existed.
/// <para>Every collective must be called by every rank, in the same order, with the same sizes. A rank that waits in
/// a collective longer than <see cref="CollectiveTimeout"/> prints what it waited for and aborts the whole job
/// (a hung peer never hangs the others forever); a rank that dies is noticed by mpirun, which ends the job.</para>
/// </summary>
public abstract class Communicator
{
    /// <summary>Environment variable: collective time limit in seconds (0 = none); default 600.</summary>
    public const string TimeoutVariable = "MLFINETUNE_MPI_TIMEOUT";
    /// <summary>Environment variable: path of Open MPI's libmpi.so when it is not on the loader path.</summary>
    public const string LibraryVariable = "MLFINETUNE_MPI_LIBRARY";

    static readonly Lazy<Communicator> s_world = new(() => FromEnvironment(Environment.GetEnvironmentVariable), LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>This process's job, from the environment the MPI launcher set (MPI is initialized on first use).</summary>
    public static Communicator World => s_world.Value;

    /// <summary>One process: rank 0 of 1; every collective is a no-op.</summary>
    public static Communicator SingleProcess { get; } = new SingleProcessCommunicator();

    static TimeSpan? s_timeout;
    static bool s_timeoutKnown;
    /// <summary>How long a rank waits in one collective before it aborts the job (null = forever); default from
    /// <see cref="TimeoutVariable"/>, else 10 minutes.</summary>
    public static TimeSpan? CollectiveTimeout
    {
        get { if (!s_timeoutKnown) { s_timeout = ParseTimeout(Environment.GetEnvironmentVariable(TimeoutVariable)); s_timeoutKnown = true; } return s_timeout; }
        set { s_timeout = value; s_timeoutKnown = true; }
    }

    public abstract int Rank { get; }
    public abstract int Size { get; }
    /// <summary>Rank among the processes on this node (the GPU a rank should use: MLContext.GpuDeviceId = LocalRank).</summary>
    public abstract int LocalRank { get; }
    public bool IsRoot => Rank == 0;
    public bool IsDistributed => Size > 1;

    /// <summary>Element-wise reduction over all ranks, in place; every rank gets the result.</summary>
    public abstract void AllReduce(Span<double> values, ReduceOperation op = ReduceOperation.Sum);
    public abstract void AllReduce(Span<float> values, ReduceOperation op = ReduceOperation.Sum);
    public abstract void AllReduce(Span<long> values, ReduceOperation op = ReduceOperation.Sum);
    /// <summary>Copies <paramref name="data"/> of <paramref name="root"/> into every rank's buffer of the same length.</summary>
    public abstract void Broadcast(Span<byte> data, int root = 0);
    /// <summary>Every rank's bytes (lengths may differ), indexed by rank, on every rank.</summary>
    public abstract byte[][] AllGather(ReadOnlySpan<byte> mine);
    public abstract void Barrier();

    public abstract CommunicationStats Stats { get; }
    public abstract void ResetStats();

    /// <summary>
    /// The communicator the environment describes. Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE / _RANK /
    /// _LOCAL_RANK; a PMIx launcher (srun --mpi=pmix, prterun) sets PMIX_RANK; other PMI launchers set PMI_SIZE.
    /// One process, or none of these: <see cref="SingleProcess"/> and MPI is never loaded.
    /// </summary>
    internal static Communicator FromEnvironment(Func<string, string?> env)
    {
        var launch = MpiLaunch.Detect(env);
        return launch is null ? SingleProcess : MpiCommunicator.Initialize(launch);
    }

    /// <summary>The value of <see cref="TimeoutVariable"/>: unset = 10 minutes, 0 = no limit, else seconds.</summary>
    internal static TimeSpan? ParseTimeout(string? v)
    {
        if (string.IsNullOrWhiteSpace(v)) return TimeSpan.FromMinutes(10);
        if (!double.TryParse(v, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double s) || s < 0)
            throw new InvalidOperationException($"environment variable {TimeoutVariable}='{v}': expected seconds ≥ 0 (0 = no limit)");
        return s == 0 ? null : TimeSpan.FromSeconds(s);
    }

    sealed class SingleProcessCommunicator : Communicator
    {
        public override int Rank => 0;
        public override int Size => 1;
        public override int LocalRank => 0;
        public override void AllReduce(Span<double> values, ReduceOperation op) { }
        public override void AllReduce(Span<float> values, ReduceOperation op) { }
        public override void AllReduce(Span<long> values, ReduceOperation op) { }
        public override void Broadcast(Span<byte> data, int root) { if (root != 0) throw new ArgumentOutOfRangeException(nameof(root)); }
        public override byte[][] AllGather(ReadOnlySpan<byte> mine) => [mine.ToArray()];
        public override void Barrier() { }
        public override CommunicationStats Stats => new(0, 0, 0);
        public override void ResetStats() { }
    }
}

/// <summary>What the launcher's environment says about this process (null from <see cref="Detect"/> = not launched by MPI, or alone).</summary>
internal sealed record MpiLaunch(string Reason, int? Size, int? Rank, int LocalRank, string Library)
{
    public static MpiLaunch? Detect(Func<string, string?> env)
    {
        static int? Int(string? s) => int.TryParse(s, out int v) ? v : null;
        string library = env(Communicator.LibraryVariable) is { Length: > 0 } l ? l : OpenMpi.DefaultLibrary;
        int local = Int(env("OMPI_COMM_WORLD_LOCAL_RANK")) ?? Int(env("MPI_LOCALRANKID")) ?? Int(env("SLURM_LOCALID")) ?? 0;
        if (Int(env("OMPI_COMM_WORLD_SIZE")) is int size)
            return size > 1 ? new MpiLaunch($"OMPI_COMM_WORLD_SIZE={size}", size, Int(env("OMPI_COMM_WORLD_RANK")), local, library) : null;
        if (env("PMIX_RANK") is { Length: > 0 } pmix) return new MpiLaunch($"PMIX_RANK={pmix}", null, Int(pmix), local, library);
        if (Int(env("PMI_SIZE")) is int pmiSize)
            return pmiSize > 1 ? new MpiLaunch($"PMI_SIZE={pmiSize}", pmiSize, Int(env("PMI_RANK")), local, library) : null;
        return null;
    }
}
