using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Runtime;

/// <summary>
/// CPU tensors over memory we own (a memory-mapped file): libtorch's <c>from_blob</c>, which TorchSharp 0.107 has
/// natively (<c>THSTensor_new</c>, behind <c>torch.tensor(array)</c>) but exposes only for managed arrays.
/// </summary>
internal static unsafe class NativeTensors
{
    // THSTensor_new(data, deleter, sizes, ndims, scalar type of data, dtype of result, device type, device index, requires_grad):
    // from_blob on the CPU when the device type is 0 and the two types agree, so nothing is copied.
    [DllImport("LibTorchSharp")]
    static extern IntPtr THSTensor_new(IntPtr data, IntPtr deleter, long* sizes, int ndims, sbyte scalarType, sbyte dtype,
        int deviceType, int deviceIndex, [MarshalAs(UnmanagedType.U1)] bool requiresGrad);

    static readonly ConcurrentDictionary<IntPtr, IDisposable> Owners = new();

    /// <summary>
    /// A tensor over <paramref name="data"/> that the caller keeps valid until the tensor is disposed (and until any
    /// view of it is gone): use it for a copy, then dispose it.
    /// </summary>
    public static Tensor View(void* data, ReadOnlySpan<long> shape, ScalarType type) => Create((IntPtr)data, shape, type, &Ignore);

    /// <summary>
    /// A tensor over <paramref name="data"/> that owns <paramref name="owner"/>: it is disposed when libtorch frees the
    /// tensor's storage (the last tensor or view of it), on whatever thread that happens.
    /// </summary>
    public static Tensor Owning(void* data, ReadOnlySpan<long> shape, ScalarType type, IDisposable owner)
    {
        if (!Owners.TryAdd((IntPtr)data, owner)) throw new InvalidOperationException("memory is already owned by a tensor");
        try { return Create((IntPtr)data, shape, type, &Release); }
        catch { Owners.TryRemove((IntPtr)data, out _); throw; }
    }

    /// <summary>The owner of the memory under <paramref name="t"/> (a CPU tensor starting at it), or null (tests).</summary>
    internal static IDisposable? OwnerOf(Tensor t)
    {
        if (t.device_type != DeviceType.CPU || t.numel() == 0) return null;
        fixed (byte* p = t.bytes) return Owners.TryGetValue((IntPtr)p, out var owner) ? owner : null;
    }

    /// <summary>Whether <paramref name="owner"/> still backs a live tensor (tests).</summary>
    internal static bool IsLive(IDisposable owner) => Owners.Values.Any(o => ReferenceEquals(o, owner));

    static Tensor Create(IntPtr data, ReadOnlySpan<long> shape, ScalarType type, delegate* unmanaged[Cdecl]<IntPtr, void> deleter)
    {
        IntPtr handle;
        fixed (long* sizes = shape)
            handle = THSTensor_new(data, (IntPtr)deleter, sizes, shape.Length, (sbyte)type, (sbyte)type, 0, 0, false);
        if (handle == IntPtr.Zero) torch.CheckForErrors();
        return Tensor.UnsafeCreateTensor(handle);
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    static void Ignore(IntPtr data) { }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    static void Release(IntPtr data)
    {
        if (Owners.TryRemove(data, out var owner))
            try { owner.Dispose(); } catch { /* never throw into native code */ }
    }
}
