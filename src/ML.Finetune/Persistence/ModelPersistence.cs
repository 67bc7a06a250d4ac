using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace ML.Finetune.Persistence;

/// <summary>Identity of a saved component: ML.NET's VersionInfo, without exposing that internal type to callers.</summary>
/// <param name="ModelSignature">Exactly 8 ASCII characters, stored in the model header.</param>
/// <param name="Version">Written, readable and read-back version (one number: every format change is a new loader).</param>
/// <param name="LoaderSignature">At most 24 Latin-1 characters; the name ML.NET looks the loader up by.</param>
/// <param name="ComponentType">The component's type; its assembly is the loader assembly ML.NET loads on Load.</param>
public sealed record PersistedComponentInfo(string ModelSignature, uint Version, string LoaderSignature, Type ComponentType);

/// <summary>
/// The one bridge to ML.NET's internal persistence API (ModelSaveContext/ModelLoadContext members are internal;
/// see the README in this folder). Our transformers call only this, so a future ML.NET change is mended here.
/// </summary>
public static class ModelPersistence
{
    private static VersionInfo ToVersionInfo(PersistedComponentInfo info) => new(
        modelSignature: info.ModelSignature,
        verWrittenCur: info.Version,
        verReadableCur: info.Version,
        verWeCanReadBack: info.Version,
        loaderSignature: info.LoaderSignature,
        loaderAssemblyName: info.ComponentType.Assembly.GetName().Name);

    public static void Save(ModelSaveContext ctx, PersistedComponentInfo info, Action<ModelStateWriter> write)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(ToVersionInfo(info));
        write(new ModelStateWriter(ctx));
    }

    public static T Load<T>(ModelLoadContext ctx, PersistedComponentInfo info, Func<ModelStateReader, T> read)
    {
        ctx.CheckAtModel(ToVersionInfo(info));
        return read(new ModelStateReader(ctx));
    }
}

/// <summary>Named binary entries plus a small header stream, inside ML.NET's model zip.</summary>
public sealed class ModelStateWriter
{
    private readonly ModelSaveContext _ctx;
    internal ModelStateWriter(ModelSaveContext ctx) => _ctx = ctx;
    public BinaryWriter Header => _ctx.Writer;
    public void WriteEntry(string name, Action<Stream> write) => _ctx.SaveBinaryStream(name, w => { w.Flush(); write(w.BaseStream); });
    public void WriteEntry(string name, byte[] bytes) => WriteEntry(name, s => s.Write(bytes, 0, bytes.Length));
}

public sealed class ModelStateReader
{
    private readonly ModelLoadContext _ctx;
    internal ModelStateReader(ModelLoadContext ctx) => _ctx = ctx;
    public BinaryReader Header => _ctx.Reader;

    /// <summary>Returns the entry's bytes; throws InvalidDataException naming the entry when it is missing.</summary>
    public byte[] ReadEntry(string name) => TryReadEntry(name)
        ?? throw new InvalidDataException($"The saved model has no entry '{name}'; the file is incomplete or was not written by this component.");

    /// <summary>The entry's bytes, or null when the model has no such entry (optional entries of newer writers).</summary>
    public byte[]? TryReadEntry(string name)
    {
        byte[]? result = null;
        bool found = _ctx.TryLoadBinaryStream(name, r =>
        {
            using var ms = new MemoryStream();
            r.BaseStream.CopyTo(ms);
            result = ms.ToArray();
        });
        return found ? result : null;
    }
}
