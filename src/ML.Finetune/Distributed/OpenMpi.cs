using System.Runtime.InteropServices;

namespace ML.Finetune.Distributed;

/// <summary>
/// The few MPI C calls data parallelism needs, bound at run time to Open MPI's <c>libmpi.so.40</c>.
/// <para>Why not the MPI.NET package: MPI.NET 1.4.0 P/Invokes <c>msmpi.dll</c> and passes MS-MPI's integer handles
/// (MPI_COMM_WORLD = 0x44000000 …); Open MPI's handles are addresses of exported structs, so mapping msmpi.dll onto
/// libmpi.so crashes in the first call (checked: SIGSEGV in MPI_Comm_size).</para>
/// <para>Open MPI's predefined handles are data symbols: MPI_COMM_WORLD is <c>&amp;ompi_mpi_comm_world</c>, MPI_FLOAT is
/// <c>&amp;ompi_mpi_float</c>, MPI_SUM is <c>&amp;ompi_mpi_op_sum</c>; <see cref="NativeLibrary.GetExport"/> returns exactly those
/// addresses. The library is opened with RTLD_GLOBAL because Open MPI's plugins (mca_*.so) resolve opal_* symbols from
/// the global scope, which a plain <see cref="NativeLibrary.Load(string)"/> (RTLD_LOCAL) would hide from them.</para>
/// </summary>
internal sealed unsafe class OpenMpi
{
    public const int Success = 0, ThreadSerialized = 2, ThreadMultiple = 3;
    /// <summary>MPI_IN_PLACE in Open MPI's mpi.h.</summary>
    public static readonly void* InPlace = (void*)1;
    public const string DefaultLibrary = "libmpi.so.40";

    public readonly nint CommWorld, Byte, Int, Long, Float, Double, OpSum, OpMin, OpMax;

    readonly delegate* unmanaged<int*, int> _initialized, _finalized;
    readonly delegate* unmanaged<int*, nint, int, int*, int> _initThread;
    readonly delegate* unmanaged<int> _finalize;
    readonly delegate* unmanaged<nint, int, int> _abort;
    readonly delegate* unmanaged<nint, int*, int> _commRank, _commSize;
    readonly delegate* unmanaged<void*, void*, int, nint, nint, nint, int> _allreduce;
    readonly delegate* unmanaged<void*, int, nint, int, nint, int> _bcast;
    readonly delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int> _allgather;
    readonly delegate* unmanaged<void*, int, nint, void*, int*, int*, nint, nint, int> _allgatherv;
    readonly delegate* unmanaged<nint, int> _barrier;
    readonly delegate* unmanaged<int, byte*, int*, int> _errorString;

    OpenMpi(nint lib)
    {
        nint Sym(string name) => NativeLibrary.TryGetExport(lib, name, out var p) ? p
            : throw new InvalidOperationException($"the MPI library has no symbol '{name}': it is not Open MPI (ML.Finetune speaks Open MPI's ABI; " +
                                                  "launch with Open MPI's mpirun, or point MLFINETUNE_MPI_LIBRARY at Open MPI's libmpi.so)");
        CommWorld = Sym("ompi_mpi_comm_world"); Byte = Sym("ompi_mpi_byte"); Int = Sym("ompi_mpi_int"); Long = Sym("ompi_mpi_long");
        Float = Sym("ompi_mpi_float"); Double = Sym("ompi_mpi_double");
        OpSum = Sym("ompi_mpi_op_sum"); OpMin = Sym("ompi_mpi_op_min"); OpMax = Sym("ompi_mpi_op_max");
        _initialized = (delegate* unmanaged<int*, int>)Sym("MPI_Initialized");
        _finalized = (delegate* unmanaged<int*, int>)Sym("MPI_Finalized");
        _initThread = (delegate* unmanaged<int*, nint, int, int*, int>)Sym("MPI_Init_thread");
        _finalize = (delegate* unmanaged<int>)Sym("MPI_Finalize");
        _abort = (delegate* unmanaged<nint, int, int>)Sym("MPI_Abort");
        _commRank = (delegate* unmanaged<nint, int*, int>)Sym("MPI_Comm_rank");
        _commSize = (delegate* unmanaged<nint, int*, int>)Sym("MPI_Comm_size");
        _allreduce = (delegate* unmanaged<void*, void*, int, nint, nint, nint, int>)Sym("MPI_Allreduce");
        _bcast = (delegate* unmanaged<void*, int, nint, int, nint, int>)Sym("MPI_Bcast");
        _allgather = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int>)Sym("MPI_Allgather");
        _allgatherv = (delegate* unmanaged<void*, int, nint, void*, int*, int*, nint, nint, int>)Sym("MPI_Allgatherv");
        _barrier = (delegate* unmanaged<nint, int>)Sym("MPI_Barrier");
        _errorString = (delegate* unmanaged<int, byte*, int*, int>)Sym("MPI_Error_string");
    }

    /// <summary>Opens Open MPI's library (RTLD_NOW | RTLD_GLOBAL) and binds the calls; a clear error when it is missing.</summary>
    public static OpenMpi Load(string library, string launchedBecause)
    {
        nint handle = DlOpen(library, out string? error);
        if (handle == 0)
            throw new InvalidOperationException(
                $"this process was started by an MPI launcher ({launchedBecause}) but Open MPI's library '{library}' could not be loaded ({error}). " +
                "Install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev) or set MLFINETUNE_MPI_LIBRARY to the path of its libmpi.so.");
        return new OpenMpi(handle);
    }

    public bool Initialized { get { int f; Check(_initialized(&f), "MPI_Initialized"); return f != 0; } }
    public bool Finalized { get { int f; Check(_finalized(&f), "MPI_Finalized"); return f != 0; } }

    /// <summary>MPI_Init_thread(NULL, NULL, required); returns the thread level provided.</summary>
    public int InitThread(int required) { int provided; Check(_initThread(null, 0, required, &provided), "MPI_Init_thread"); return provided; }
    public void FinalizeMpi() => Check(_finalize(), "MPI_Finalize");
    public void Abort(int errorCode) => _abort(CommWorld, errorCode);
    public int Rank() { int r; Check(_commRank(CommWorld, &r), "MPI_Comm_rank"); return r; }
    public int Size() { int s; Check(_commSize(CommWorld, &s), "MPI_Comm_size"); return s; }

    public void AllReduce(void* send, void* receive, int count, nint type, nint op) =>
        Check(_allreduce(send, receive, count, type, op, CommWorld), "MPI_Allreduce");
    public void Broadcast(void* buffer, int count, nint type, int root) => Check(_bcast(buffer, count, type, root, CommWorld), "MPI_Bcast");
    public void AllGather(void* send, int count, nint type, void* receive) =>
        Check(_allgather(send, count, type, receive, count, type, CommWorld), "MPI_Allgather");
    public void AllGatherV(void* send, int count, void* receive, int* counts, int* displacements) =>
        Check(_allgatherv(send, count, Byte, receive, counts, displacements, Byte, CommWorld), "MPI_Allgatherv");
    public void Barrier() => Check(_barrier(CommWorld), "MPI_Barrier");

    void Check(int rc, string call)
    {
        if (rc == Success) return;
        var buf = stackalloc byte[512];
        int len = 0;
        string text = _errorString(rc, buf, &len) == Success ? System.Text.Encoding.ASCII.GetString(buf, Math.Clamp(len, 0, 512)) : $"error {rc}";
        throw new DistributedException($"{call} failed: {text}");
    }

    // dlopen lives in libc.so.6 from glibc 2.34 on and in libdl.so.2 before (which newer glibc keeps as a stub).
    const int RtldNow = 0x2, RtldGlobal = 0x100;

    static nint DlOpen(string library, out string? error)
    {
        error = null;
        nint libdl = 0;
        foreach (var name in new[] { "libdl.so.2", "libc.so.6" })
            if (NativeLibrary.TryLoad(name, out libdl) && NativeLibrary.TryGetExport(libdl, "dlopen", out _)) break;
        if (libdl == 0 || !NativeLibrary.TryGetExport(libdl, "dlopen", out var dlopenPtr) || !NativeLibrary.TryGetExport(libdl, "dlerror", out var dlerrorPtr))
        {
            error = "no dlopen in libdl.so.2 or libc.so.6 (MPI data parallelism needs Linux with glibc)";
            return 0;
        }
        var dlopen = (delegate* unmanaged<byte*, int, nint>)dlopenPtr;
        var dlerror = (delegate* unmanaged<byte*>)dlerrorPtr;
        var bytes = System.Text.Encoding.UTF8.GetBytes(library + "\0");
        fixed (byte* p = bytes)
        {
            nint h = dlopen(p, RtldNow | RtldGlobal);
            if (h == 0) error = Marshal.PtrToStringUTF8((nint)dlerror()) ?? "dlopen failed";
            return h;
        }
    }
}

/// <summary>An MPI call failed, or the ranks disagree about the run: the job cannot continue.</summary>
public sealed class DistributedException : InvalidOperationException
{
    public DistributedException(string message) : base(message) { }
}
