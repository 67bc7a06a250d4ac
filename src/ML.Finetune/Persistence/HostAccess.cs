using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace ML.Finetune.Persistence;

/// <summary>
/// The other small bridge to ML.NET internals (kept in this folder with <see cref="ModelPersistence"/>): the
/// environment behind a catalog, its GPU settings, cancellation and logging.
/// </summary>
public static class HostAccess
{
    /// <summary>The IHostEnvironment (the MLContext) a catalog belongs to.</summary>
    public static IHostEnvironment GetEnvironment(TransformsCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        foreach (var iface in catalog.GetType().GetInterfaces())
        {
            var prop = iface.GetProperty("Environment", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance);
            if (prop != null && typeof(IHostEnvironment).IsAssignableFrom(prop.PropertyType))
                return (IHostEnvironment)prop.GetValue(catalog)!;
        }
        var field = catalog.GetType().GetProperty("Environment", BindingFlags.NonPublic | BindingFlags.Instance);
        return field?.GetValue(catalog) as IHostEnvironment
            ?? throw new InvalidOperationException("Could not find the MLContext behind the catalog (ML.NET internals changed).");
    }

    /// <summary>MLContext.GpuDeviceId and MLContext.FallbackToCpu.</summary>
    public static (int? GpuDeviceId, bool FallbackToCpu) GpuSettings(IHostEnvironment env) =>
        env is IHostEnvironmentInternal i ? (i.GpuDeviceId, i.FallbackToCpu) : (null, true);

    public static IHost Register(IHostEnvironment env, string name) => env.Register(name);

    /// <summary>Throws when the user cancelled the MLContext (OperationCanceledException).</summary>
    public static void CheckAlive(IHost host) => host.CheckAlive();

    /// <summary>Writes an informational message to the ML.NET log (MLContext.Log).</summary>
    public static void Info(IHost host, string message)
    {
        using var ch = host.Start("Finetune");
        ch.Info(message);
    }

    /// <summary>Writes a warning to the ML.NET log (MLContext.Log, kind Warning).</summary>
    public static void Warning(IHost host, string message)
    {
        using var ch = host.Start("Finetune");
        ch.Warning(MessageSensitivity.Unknown, message); // may quote training data (ML.NET's default sensitivity)
    }

    /// <summary>A scalar SchemaShape column (its constructor is internal in ML.NET).</summary>
    public static SchemaShape.Column ScalarColumn(string name, DataViewType type) =>
        new(name, SchemaShape.Column.VectorKind.Scalar, type, false);

    /// <summary>Cancels everything running on an MLContext (ML.NET's internal ICancelable); CheckAlive then throws.</summary>
    public static void CancelExecution(IHostEnvironment env)
    {
        if (env is ICancelable c) { c.CancelExecution(); return; }
        // MLContext keeps it internal (MLContext.CancelExecution in Microsoft.ML.Data, not publicized).
        var m = env.GetType().GetMethod("CancelExecution", BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic, Type.EmptyTypes);
        if (m != null) m.Invoke(env, null);
        else throw new NotSupportedException("This environment cannot be cancelled.");
    }
}
