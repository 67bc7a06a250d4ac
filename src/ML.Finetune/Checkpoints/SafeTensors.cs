using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Checkpoints;

/// <summary>One tensor entry of a safetensors header. Offsets are relative to the start of the data region.</summary>
public sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>A tensor to write: its name, header dtype string (F32, BF16, ...) and shape.</summary>
public sealed record SafeTensorEntry(string Name, string DType, long[] Shape)
{
    public long ByteLength => Shape.Aggregate(1L, (a, b) => a * b) * SafeTensors.ElementSize(DType);
}

/// <summary>A validated safetensors header: tensors, optional metadata and where the data region starts.</summary>
public sealed record SafeTensorsHeader(
    string Path, IReadOnlyDictionary<string, SafeTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata, long DataStart);

/// <summary>
/// Strict reader/writer for the safetensors format: 8-byte little-endian header length, JSON header, raw data.
/// Everything in the header is validated before a single tensor byte is read, so a hostile file can at worst
/// produce a <see cref="CheckpointFormatException"/>.
/// </summary>
public static class SafeTensors
{
    /// <summary>Headers above this size are refused (the reference implementation uses the same order of magnitude).</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    static readonly Dictionary<string, (ScalarType Type, int Size)> DTypes = new()
    {
        ["F32"] = (ScalarType.Float32, 4), ["F16"] = (ScalarType.Float16, 2), ["BF16"] = (ScalarType.BFloat16, 2),
        ["F64"] = (ScalarType.Float64, 8), ["I64"] = (ScalarType.Int64, 8), ["I32"] = (ScalarType.Int32, 4),
        ["I8"] = (ScalarType.Int8, 1), ["U8"] = (ScalarType.Byte, 1), ["BOOL"] = (ScalarType.Bool, 1),
    };

    static readonly UTF8Encoding StrictUtf8 = new(false, true);

    public static IReadOnlyCollection<string> SupportedDTypes => DTypes.Keys;

    /// <summary>The torch dtype of a header dtype string (one of <see cref="SupportedDTypes"/>).</summary>
    public static ScalarType ScalarTypeOf(string dtype) => DTypes[dtype].Type;

    /// <summary>Bytes per element of a header dtype string.</summary>
    public static int ElementSize(string dtype) => DTypes[dtype].Size;

    /// <summary>Whether a header dtype string is a floating type.</summary>
    public static bool IsFloating(string dtype) => dtype is "F32" or "F16" or "BF16" or "F64";

    /// <summary>Reads and validates the header only.</summary>
    public static SafeTensorsHeader ReadHeader(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file not found: {path}", path);
        using var fs = File.OpenRead(path);
        return ReadHeader(fs, path);
    }

    internal static SafeTensorsHeader ReadHeader(FileStream fs, string path)
    {
        long fileLength = fs.Length;
        if (fileLength < 8) throw Bad(path, "(header length)", $"file is {fileLength} bytes, shorter than the 8-byte header length");
        Span<byte> lenBytes = stackalloc byte[8];
        fs.ReadExactly(lenBytes);
        ulong headerLen = BitConverter.ToUInt64(lenBytes); // safetensors is little-endian; so is every platform we run on
        if (headerLen > (ulong)(fileLength - 8))
            throw Bad(path, "(header length)", $"header length {headerLen} exceeds the {fileLength - 8} bytes after the length field");
        if (headerLen > MaxHeaderBytes)
            throw Bad(path, "(header length)", $"header length {headerLen} exceeds the cap of {MaxHeaderBytes} bytes");
        var headerBytes = new byte[headerLen];
        fs.ReadExactly(headerBytes);
        long dataStart = 8 + (long)headerLen;
        long dataLength = fileLength - dataStart;

        JsonDocument doc;
        try { StrictUtf8.GetCharCount(headerBytes); }
        catch (DecoderFallbackException e) { throw new CheckpointFormatException($"{path}: tensor/field '(header)': header is not valid UTF-8", e) { FilePath = path }; }
        try { doc = JsonDocument.Parse(headerBytes, new JsonDocumentOptions { MaxDepth = 16 }); }
        catch (Exception e) when (e is JsonException or ArgumentException or DecoderFallbackException)
        { throw new CheckpointFormatException($"{path}: header is not valid JSON: {e.Message}", e) { FilePath = path }; }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad(path, "(header)", "header JSON is not an object");
            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (sawMetadata) throw Bad(path, "__metadata__", "duplicate key");
                    sawMetadata = true;
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw Bad(path, "__metadata__", "must be an object of strings");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw Bad(path, $"__metadata__.{m.Name}", "metadata values must be strings");
                        metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                if (tensors.ContainsKey(prop.Name)) throw Bad(path, prop.Name, "duplicate tensor name");
                tensors[prop.Name] = ParseEntry(path, prop.Name, prop.Value, dataLength);
            }
            // Entries must not overlap: sort by start and require each to begin at or after the previous end.
            SafeTensorInfo? prev = null;
            foreach (var t in tensors.Values.Where(t => t.End > t.Begin).OrderBy(t => t.Begin))
            {
                if (prev != null && t.Begin < prev.End)
                    throw Bad(path, t.Name, $"data_offsets [{t.Begin},{t.End}] overlap tensor '{prev.Name}' [{prev.Begin},{prev.End}]");
                prev = t;
            }
            return new SafeTensorsHeader(path, tensors, metadata, dataStart);
        }
    }

    static SafeTensorInfo ParseEntry(string path, string name, JsonElement e, long dataLength)
    {
        if (e.ValueKind != JsonValueKind.Object) throw Bad(path, name, "entry is not an object");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw Bad(path, name, "missing or non-string 'dtype'");
        string dtype = dt.GetString()!;
        if (!DTypes.TryGetValue(dtype, out var info))
            throw Bad(path, name, $"unknown dtype '{dtype}' (supported: {string.Join(", ", DTypes.Keys)})");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) throw Bad(path, name, "missing or non-array 'shape'");
        var shape = new long[sh.GetArrayLength()];
        if (shape.Length > 64) throw Bad(path, name, $"shape has {shape.Length} dimensions");
        long numel = 1;
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                throw Bad(path, name, $"shape[{i}] is not a non-negative integer");
            shape[i++] = v;
            try { numel = checked(numel * v); }
            catch (OverflowException) { throw Bad(path, name, "number of elements overflows"); }
        }
        long byteLen;
        try { byteLen = checked(numel * info.Size); }
        catch (OverflowException) { throw Bad(path, name, "byte size overflows"); }
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw Bad(path, name, "missing 'data_offsets' or it is not a pair");
        var o = off.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.Number && x.TryGetInt64(out long v) ? v : -1).ToArray();
        long begin = o[0], end = o[1];
        if (begin < 0 || end < 0) throw Bad(path, name, "data_offsets must be non-negative integers");
        if (begin > end) throw Bad(path, name, $"data_offsets begin {begin} > end {end}");
        if (end > dataLength) throw Bad(path, name, $"data_offsets end {end} is beyond the data region of {dataLength} bytes");
        if (end - begin != byteLen)
            throw Bad(path, name, $"data_offsets cover {end - begin} bytes but dtype {dtype} x shape [{string.Join(",", shape)}] needs {byteLen}");
        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    static CheckpointFormatException Bad(string path, string field, string what) =>
        new($"{path}: tensor/field '{field}': {what}") { FilePath = path };

    /// <summary>
    /// Loads every tensor (or those accepted by <paramref name="filter"/>). Floating tensors are converted to
    /// <paramref name="floatDType"/> when given; otherwise F16/BF16 are kept as stored. Each tensor is read from the
    /// memory-mapped file straight into its own storage (<see cref="SafeTensorsMapping"/>).
    /// </summary>
    public static Dictionary<string, Tensor> Load(string path, ScalarType? floatDType = null, Device? device = null, Func<string, bool>? filter = null)
    {
        using var file = SafeTensorsMapping.Open(path);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var t in file.Header.Tensors.Values.OrderBy(t => t.Begin))
            {
                if (filter != null && !filter(t.Name)) continue;
                var type = floatDType is ScalarType want && IsFloating(t.DType) ? want : ScalarTypeOf(t.DType);
                var tensor = torch.empty(t.Shape, type, device);
                result[t.Name] = tensor;
                file.CopyTo(t, tensor);
            }
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>
    /// Writes tensors with sorted keys, contiguous little-endian data and optional string metadata.
    /// Written to a temporary file in the same folder and then renamed, so readers never see a half-written file.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var entries = tensors.Select(kv => new SafeTensorEntry(kv.Key,
            DTypes.FirstOrDefault(d => d.Value.Type == kv.Value.dtype).Key
                ?? throw new NotSupportedException($"{path}: tensor '{kv.Key}' has dtype {kv.Value.dtype}, which safetensors writing does not support"),
            kv.Value.shape)).ToList();
        Write(path, entries, (e, stream) => WriteData(stream, tensors[e.Name]), metadata);
    }

    /// <summary>
    /// Streams a safetensors file: the header from <paramref name="entries"/> (sorted by name), then each entry's data
    /// from <paramref name="writeData"/>, which must write exactly <see cref="SafeTensorEntry.ByteLength"/> bytes.
    /// Atomic like <see cref="Save"/>. Lets a caller write files larger than memory, tensor by tensor.
    /// </summary>
    public static void Write(string path, IReadOnlyList<SafeTensorEntry> entries, Action<SafeTensorEntry, Stream> writeData,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var sorted = entries.OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
        var header = new Dictionary<string, object>(StringComparer.Ordinal);
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata.ToDictionary(k => k.Key, k => k.Value);
        long offset = 0;
        foreach (var e in sorted)
        {
            if (!DTypes.ContainsKey(e.DType)) throw new NotSupportedException($"{path}: tensor '{e.Name}' has unknown dtype '{e.DType}'");
            if (!header.TryAdd(e.Name, new { dtype = e.DType, shape = e.Shape, data_offsets = new[] { offset, offset + e.ByteLength } }))
                throw new ArgumentException($"{path}: tensor '{e.Name}' is given twice");
            offset += e.ByteLength;
        }
        var json = JsonSerializer.SerializeToUtf8Bytes(header);
        int pad = (8 - json.Length % 8) % 8; // align the data region to 8 bytes, padding with spaces as the spec allows
        var headerBytes = new byte[json.Length + pad];
        json.CopyTo(headerBytes, 0);
        for (int i = json.Length; i < headerBytes.Length; i++) headerBytes[i] = (byte)' ';

        string full = Path.GetFullPath(path);
        string tmp = AtomicFile.TempPathFor(full);
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 20))
            {
                fs.Write(BitConverter.GetBytes((ulong)headerBytes.Length));
                fs.Write(headerBytes);
                foreach (var e in sorted)
                {
                    long before = fs.Position;
                    writeData(e, fs);
                    if (fs.Position - before != e.ByteLength)
                        throw new InvalidOperationException($"{path}: tensor '{e.Name}' needs {e.ByteLength} bytes, {fs.Position - before} were written");
                }
                fs.Flush(true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>The raw little-endian bytes of a tensor (any size: written in chunks below 2 GB).</summary>
    public static void WriteData(Stream stream, Tensor tensor)
    {
        using var scope = torch.NewDisposeScope();
        var flat = tensor.detach().cpu().contiguous().reshape(-1);
        long chunk = (1L << 30) / flat.element_size();
        for (long i = 0; i < flat.numel(); i += chunk)
            stream.Write(flat.narrow(0, i, Math.Min(chunk, flat.numel() - i)).bytes);
    }

    /// <summary>
    /// Pickle checkpoints (.bin/.pt/.pth) can run arbitrary code when deserialized; we never read them.
    /// Without <paramref name="allowPickle"/> this is a refusal; with it, we still say it is not implemented.
    /// </summary>
    public static void ThrowForPickle(string path, bool allowPickle)
    {
        if (!allowPickle)
            throw new UnsupportedModelException(
                $"{path}: pickle weights (.bin/.pt/.pth) are refused because loading them can execute code. " +
                "Convert the checkpoint to safetensors, or pass allowPickle: true (which is still not implemented).");
        throw new UnsupportedModelException(
            $"{path}: allowPickle was set, but reading pickle weights is not implemented (ML.Finetune never deserializes pickle). Convert to safetensors.");
    }

    public static bool IsPickleFile(string path) =>
        Path.GetExtension(path).ToLowerInvariant() is ".bin" or ".pt" or ".pth" or ".pkl" or ".ckpt";
}
