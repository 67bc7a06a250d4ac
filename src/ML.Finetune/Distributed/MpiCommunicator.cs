using System.Diagnostics;

namespace ML.Finetune.Distributed;

/// <summary>
/// MPI_COMM_WORLD over Open MPI. Initialized once per process (MPI_Init_thread, MPI_THREAD_MULTIPLE requested; calls
/// are serialized here anyway, since collectives must be issued in one order on every rank). At process exit it calls
/// MPI_Finalize when the exit code is 0, and MPI_Abort otherwise, so a rank that fails ends the whole job at once
/// instead of leaving its peers waiting in a collective (or itself waiting in MPI_Finalize's fence).
/// </summary>
internal sealed unsafe class MpiCommunicator : Communicator
{
    readonly OpenMpi _mpi;
    readonly object _gate = new();
    readonly Watchdog _watchdog;
    long _calls, _bytes, _ticks;

    MpiCommunicator(OpenMpi mpi, int rank, int size, int localRank)
    {
        _mpi = mpi; Rank = rank; Size = size; LocalRank = localRank;
        _watchdog = new Watchdog(this);
    }

    public override int Rank { get; }
    public override int Size { get; }
    public override int LocalRank { get; }

    public static MpiCommunicator Initialize(MpiLaunch launch)
    {
        _ = CollectiveTimeout; // a malformed MLFINETUNE_MPI_TIMEOUT fails here, before MPI starts
        var mpi = OpenMpi.Load(launch.Library, launch.Reason);
        bool owner = !mpi.Initialized; // MPI initialized by the host program is finalized by it too
        if (owner) mpi.InitThread(OpenMpi.ThreadMultiple);
        int rank = mpi.Rank(), size = mpi.Size();
        if (launch.Size is int s && s != size || launch.Rank is int r && r != rank)
            throw new DistributedException($"MPI reports rank {rank} of {size}, but the launcher's environment says {launch.Reason}, rank {launch.Rank}: " +
                                           "the process was started by a different MPI than the library loaded");
        var comm = new MpiCommunicator(mpi, rank, size, launch.LocalRank);
        if (owner) AppDomain.CurrentDomain.ProcessExit += (_, _) => comm.Shutdown(Environment.ExitCode);
        return comm;
    }

    void Shutdown(int exitCode)
    {
        if (_mpi.Finalized) return;
        if (exitCode != 0) { Console.Error.Flush(); _mpi.Abort(exitCode); }
        else _mpi.FinalizeMpi();
    }

    public override void AllReduce(Span<double> values, ReduceOperation op)
    {
        fixed (double* p = values) using (Collective("MPI_Allreduce", values.Length * 8L)) _mpi.AllReduce(OpenMpi.InPlace, p, values.Length, _mpi.Double, Op(op));
    }

    public override void AllReduce(Span<float> values, ReduceOperation op)
    {
        fixed (float* p = values) using (Collective("MPI_Allreduce", values.Length * 4L)) _mpi.AllReduce(OpenMpi.InPlace, p, values.Length, _mpi.Float, Op(op));
    }

    public override void AllReduce(Span<long> values, ReduceOperation op)
    {
        fixed (long* p = values) using (Collective("MPI_Allreduce", values.Length * 8L)) _mpi.AllReduce(OpenMpi.InPlace, p, values.Length, _mpi.Long, Op(op));
    }

    public override void Broadcast(Span<byte> data, int root)
    {
        fixed (byte* p = data) using (Collective("MPI_Bcast", data.Length)) _mpi.Broadcast(p, data.Length, _mpi.Byte, root);
    }

    public override byte[][] AllGather(ReadOnlySpan<byte> mine)
    {
        var counts = new int[Size];
        var displacements = new int[Size];
        int count = mine.Length;
        fixed (int* c = counts) using (Collective("MPI_Allgather", 4L * Size)) _mpi.AllGather(&count, 1, _mpi.Int, c);
        long total = 0;
        for (int i = 0; i < Size; i++) { displacements[i] = checked((int)total); total += counts[i]; }
        var all = new byte[checked((int)total)];
        fixed (byte* send = mine) fixed (byte* receive = all) fixed (int* c = counts) fixed (int* d = displacements)
            using (Collective("MPI_Allgatherv", total)) _mpi.AllGatherV(send, count, receive, c, d);
        return Enumerable.Range(0, Size).Select(i => all.AsSpan(displacements[i], counts[i]).ToArray()).ToArray();
    }

    public override void Barrier()
    {
        using (Collective("MPI_Barrier", 0)) _mpi.Barrier();
    }

    public override CommunicationStats Stats { get { lock (_gate) return new(_calls, _bytes, _ticks / (double)Stopwatch.Frequency); } }

    public override void ResetStats() { lock (_gate) { _calls = 0; _bytes = 0; _ticks = 0; } }

    nint Op(ReduceOperation op) => op switch
    {
        ReduceOperation.Sum => _mpi.OpSum,
        ReduceOperation.Min => _mpi.OpMin,
        ReduceOperation.Max => _mpi.OpMax,
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    /// <summary>One collective in flight: serialized (held lock), timed, and watched by the watchdog until disposed.</summary>
    CollectiveScope Collective(string call, long bytes)
    {
        Monitor.Enter(_gate);
        _watchdog.Arm(call, bytes);
        return new CollectiveScope(this, bytes, Stopwatch.GetTimestamp());
    }

    readonly struct CollectiveScope(MpiCommunicator owner, long bytes, long start) : IDisposable
    {
        public void Dispose()
        {
            owner._watchdog.Disarm();
            owner._calls++; owner._bytes += bytes; owner._ticks += Stopwatch.GetTimestamp() - start;
            Monitor.Exit(owner._gate);
        }
    }

    /// <summary>
    /// Aborts the job when a collective outlasts <see cref="Communicator.CollectiveTimeout"/>: the rank blocked in it
    /// cannot return by itself, so a background thread reports what it was waiting for and calls MPI_Abort
    /// (legal from another thread under MPI_THREAD_MULTIPLE), which makes mpirun end every rank.
    /// </summary>
    sealed class Watchdog(MpiCommunicator owner)
    {
        readonly object _gate = new();
        string? _call; long _bytes; DateTime _deadline;
        Thread? _thread;

        public void Arm(string call, long bytes)
        {
            if (CollectiveTimeout is not TimeSpan limit) return;
            lock (_gate)
            {
                _call = call; _bytes = bytes; _deadline = DateTime.UtcNow + limit;
                if (_thread is null)
                {
                    _thread = new Thread(Watch) { IsBackground = true, Name = "MPI collective watchdog" };
                    _thread.Start();
                }
                Monitor.Pulse(_gate);
            }
        }

        public void Disarm() { lock (_gate) _call = null; }

        void Watch()
        {
            lock (_gate)
                while (true)
                {
                    if (_call is null) { Monitor.Wait(_gate); continue; }
                    var left = _deadline - DateTime.UtcNow;
                    if (left > TimeSpan.Zero) { Monitor.Wait(_gate, left); continue; }
                    Console.Error.WriteLine(
                        $"error: rank {owner.Rank} of {owner.Size}: {_call} ({_bytes:N0} bytes) did not complete within {CollectiveTimeout!.Value.TotalSeconds:G} s. " +
                        "Another rank has failed, is stuck, or is running different collective calls (every rank must make the same Fit/Train calls " +
                        "and read distributed-scoring output the same way). Aborting the MPI job; set " + TimeoutVariable + " (seconds, 0 = no limit) to change the limit.");
                    Console.Error.Flush();
                    owner._mpi.Abort(1);
                    return;
                }
        }
    }
}
