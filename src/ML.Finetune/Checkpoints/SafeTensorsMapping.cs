using System.IO.MemoryMappedFiles;
using ML.Finetune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Checkpoints;

/// <summary>
/// A safetensors file mapped into memory, its header validated (<see cref="SafeTensors.ReadHeader(string)"/>).
/// Tensors are copied out of the mapping window by window (<see cref="CopyTo"/>), so the file's pages are mapped only
/// while they are copied and the process never holds a second copy of a tensor, or aliased (<see cref="Alias"/>).
/// </summary>
public sealed unsafe class SafeTensorsMapping : IDisposable
{
    /// <summary>Bytes mapped at a time while copying; a window holds whole rows of the stored tensor.</summary>
    public const long WindowBytes = 64L << 20;

    readonly MemoryMappedFile _file;

    public SafeTensorsHeader Header { get; }
    public string Path => Header.Path;

    SafeTensorsMapping(MemoryMappedFile file, SafeTensorsHeader header) { _file = file; Header = header; }

    public static SafeTensorsMapping Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file not found: {path}", path);
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        try
        {
            var header = SafeTensors.ReadHeader(fs, path);
            // Copy-on-write: an aliased tensor written in place gets private pages; the file never changes.
            var file = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.CopyOnWrite, HandleInheritability.None, leaveOpen: false);
            return new SafeTensorsMapping(file, header);
        }
        catch { fs.Dispose(); throw; }
    }

    public SafeTensorInfo this[string name] => Header.Tensors[name];

    /// <summary>
    /// Copies tensor <paramref name="info"/> into <paramref name="destination"/> (any dtype and device; torch converts as
    /// <c>copy_</c> does). <paramref name="transposed"/>: the stored 2-D tensor is the transpose of the destination.
    /// </summary>
    public void CopyTo(SafeTensorInfo info, Tensor destination, bool transposed = false)
    {
        using var scope = torch.NewDisposeScope();
        var target = transposed ? destination.t() : destination;
        if (!target.shape.SequenceEqual(info.Shape))
            throw new ArgumentException($"{Path}: tensor '{info.Name}' is [{string.Join(",", info.Shape)}], the destination [{string.Join(",", target.shape)}]");
        if (info.NumElements == 0) return;
        var type = SafeTensors.ScalarTypeOf(info.DType);
        long rows = info.Shape.Length == 0 ? 1 : info.Shape[0];
        long rowBytes = (info.End - info.Begin) / rows;
        long rowsPerWindow = Math.Max(1, WindowBytes / rowBytes);
        var shape = info.Shape.Length == 0 ? [] : (long[])info.Shape.Clone();
        using (torch.no_grad())
            for (long r0 = 0; r0 < rows; r0 += rowsPerWindow)
            {
                long n = Math.Min(rowsPerWindow, rows - r0);
                if (shape.Length > 0) shape[0] = n;
                using var window = Map(info.Begin + r0 * rowBytes, n * rowBytes, MemoryMappedFileAccess.Read);
                using var source = window.Tensor(shape, type);
                (shape.Length == 0 ? target : target.narrow(0, r0, n)).copy_(source);
            }
    }

    /// <summary>
    /// A CPU tensor that is the mapped file itself (no copy): pages are read from disk (or the page cache) when first
    /// touched, are shared with the page cache, and can be dropped and re-read under memory pressure. Writes go to
    /// private copy-on-write pages. The mapping of this tensor lives until libtorch frees it, independently of this
    /// object. Requires the stored data to be aligned for its dtype.
    /// </summary>
    public Tensor Alias(SafeTensorInfo info)
    {
        var type = SafeTensors.ScalarTypeOf(info.DType);
        if (info.NumElements == 0) return torch.empty(info.Shape, type);
        var window = Map(info.Begin, info.End - info.Begin, MemoryMappedFileAccess.CopyOnWrite);
        try { return window.OwningTensor(info.Shape, type); }
        catch { window.Dispose(); throw; }
    }

    /// <summary>Whether the stored data of <paramref name="info"/> starts at a multiple of its element size in the file.</summary>
    public bool IsAligned(SafeTensorInfo info) => (Header.DataStart + info.Begin) % SafeTensors.ElementSize(info.DType) == 0;

    Window Map(long begin, long length, MemoryMappedFileAccess access) =>
        new(_file.CreateViewAccessor(Header.DataStart + begin, length, access));

    public void Dispose() => _file.Dispose();

    /// <summary>One mapped range; the pointer stays valid until the view is disposed.</summary>
    sealed class Window : IDisposable
    {
        readonly MemoryMappedViewAccessor _view;
        readonly byte* _data;
        bool _released;

        public Window(MemoryMappedViewAccessor view)
        {
            _view = view;
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _data = p + view.PointerOffset;
        }

        public Tensor Tensor(ReadOnlySpan<long> shape, ScalarType type) => NativeTensors.View(_data, shape, type);

        public Tensor OwningTensor(ReadOnlySpan<long> shape, ScalarType type) => NativeTensors.Owning(_data, shape, type, this);

        public void Dispose()
        {
            if (_released) return;
            _released = true;
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
    }
}
