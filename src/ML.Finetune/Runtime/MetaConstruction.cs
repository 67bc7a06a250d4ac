using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Runtime;

/// <summary>
/// Builds modules on the <c>meta</c> device: every tensor a constructor creates (torch factories, TorchSharp's own
/// nn modules, whose native constructors allocate and initialise their weights in C++) gets a shape and a dtype but
/// no storage, so building an 8B model costs milliseconds and no memory. <see cref="ModuleMaterializer"/> then gives
/// each parameter real storage in the target dtype and device.
/// <para>How: TorchSharp's <c>torch.set_default_device</c> is a process-wide static, so another thread creating a
/// tensor during the build would get a meta tensor, and it does not reach the native module constructors
/// (nn.Embedding allocates and fills its float32 weight in C++ regardless). libtorch's dispatcher has what PyTorch's
/// <c>with torch.device("meta")</c> gives: thread-local dispatch keys. With <c>Meta</c> included and
/// <c>BackendSelect</c> excluded on this thread only, every factory call on it dispatches to the meta kernels (an
/// explicit device in the call included). We set them through c10's exported <c>tls_set_dispatch_key_*</c> and
/// find the key numbers by name with <c>c10::toString(DispatchKey)</c>, so they are not hard-coded.</para>
/// <para>Where those symbols are missing (not Itanium C++ mangling, another libtorch), the fallback is
/// <c>torch.set_default_device(META)</c> under a lock: correct for our modules, but process-wide for its duration
/// and without the native modules (see <see cref="IsThreadLocal"/>).</para>
/// </summary>
public static class MetaConstruction
{
    /// <summary>True when construction uses the thread-local dispatch keys (no effect on other threads).</summary>
    public static bool IsThreadLocal => Keys.Value != null;

    /// <summary>Runs <paramref name="create"/> with every tensor it makes on the meta device.</summary>
    public static T Build<T>(Func<T> create)
    {
        var keys = Keys.Value;
        if (keys == null)
        {
            lock (FallbackGate)
            {
                var previous = torch.get_default_device();
                torch.set_default_device(torch.META);
                try { return create(); }
                finally { torch.set_default_device(previous); }
            }
        }
        using (keys.MetaScope()) return create();
    }

    static readonly object FallbackGate = new();
    static readonly Lazy<DispatchKeys?> Keys = new(DispatchKeys.TryLoad);

    sealed unsafe class DispatchKeys
    {
        const string RawLocalKeySet = "_ZN3c104impl26raw_local_dispatch_key_setE";
        IntPtr _c10;
        ushort _meta, _backendSelect;
        delegate* unmanaged<ushort, byte, void> _setIncluded, _setExcluded;

        /// <summary>
        /// Includes Meta and excludes BackendSelect on this thread until disposed. Removing a per-backend key again
        /// would leave its backend bit behind (c10 removes only the functionality bit), so the scope saves and
        /// restores the thread's whole 16-byte key set (<c>raw_local_dispatch_key_set</c>, a thread_local that
        /// dlsym resolves for the calling thread).
        /// </summary>
        public Scope MetaScope()
        {
            var state = (ulong*)NativeLibrary.GetExport(_c10, RawLocalKeySet);
            var scope = new Scope(state);
            _setIncluded(_meta, 1);
            _setExcluded(_backendSelect, 1);
            return scope;
        }

        public readonly struct Scope : IDisposable
        {
            readonly ulong* _state;
            readonly ulong _included, _excluded;
            public Scope(ulong* state) { _state = state; _included = state[0]; _excluded = state[1]; }
            public void Dispose() { _state[0] = _included; _state[1] = _excluded; }
        }

        public static DispatchKeys? TryLoad()
        {
            _ = torch.empty(0); // TorchSharp loads libtorch (and with it libc10) on first use
            if (!NativeLibrary.TryLoad("libc10.so", out var c10) && !NativeLibrary.TryLoad("libc10.dylib", out c10)) return null;
            if (!NativeLibrary.TryGetExport(c10, "_ZN3c108toStringENS_11DispatchKeyE", out var toString) ||
                !NativeLibrary.TryGetExport(c10, "_ZN3c104impl29tls_set_dispatch_key_includedENS_11DispatchKeyEb", out var setIncluded) ||
                !NativeLibrary.TryGetExport(c10, "_ZN3c104impl29tls_set_dispatch_key_excludedENS_11DispatchKeyEb", out var setExcluded) ||
                !NativeLibrary.TryGetExport(c10, RawLocalKeySet, out _))
                return null;
            var name = (delegate* unmanaged<ushort, IntPtr>)toString;
            int meta = -1, backendSelect = -1;
            for (int k = 0; k < 512 && (meta < 0 || backendSelect < 0); k++)
            {
                string? s = Marshal.PtrToStringAnsi(name((ushort)k));
                if (s == "Meta") meta = k;
                else if (s == "BackendSelect") backendSelect = k;
            }
            if (meta < 0 || backendSelect < 0) return null;
            var keys = new DispatchKeys
            {
                _c10 = c10, _meta = (ushort)meta, _backendSelect = (ushort)backendSelect,
                _setIncluded = (delegate* unmanaged<ushort, byte, void>)setIncluded, _setExcluded = (delegate* unmanaged<ushort, byte, void>)setExcluded,
            };
            // Checked on a thread of its own: if the scope failed to undo itself, only that thread would be affected.
            bool works = false;
            var probe = new Thread(() => { try { works = keys.Works(); } catch (ExternalException) { } }) { IsBackground = true };
            probe.Start();
            probe.Join();
            return works ? keys : null;
        }

        /// <summary>A one-off check, before any model relies on it, that the scope makes meta tensors and undoes itself.</summary>
        bool Works()
        {
            bool meta;
            using (MetaScope())
            {
                using var t = torch.zeros(2, 3);
                meta = t.device_type == DeviceType.META;
            }
            using var a = torch.ones(2);
            using var b = a.add(1); // an op on CPU tensors: runs on the CPU only if no meta bit was left behind
            return meta && b.device_type == DeviceType.CPU && b.sum().item<float>() == 4f;
        }
    }
}
