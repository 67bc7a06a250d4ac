using ML.Finetune.Checkpoints;
using static TorchSharp.torch;

namespace ML.Finetune.Tests;

/// <summary>Paths and cached tensors of the shared HF fixtures copied next to the test assembly.</summary>
internal static class Fixtures
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "Fixtures");
    public static string Model(string name) => Path.Combine(Root, name);
    public static string Reference(string file) => Path.Combine(Root, "reference", file);

    static readonly Lazy<Dictionary<string, Tensor>> _inputs = new(() => Keep(SafeTensors.Load(Reference("inputs.safetensors"))));
    static readonly Lazy<Dictionary<string, Tensor>> _generation = new(() => Keep(SafeTensors.Load(Reference("generation.safetensors"))));
    static readonly Dictionary<string, Dictionary<string, Tensor>> _refs = new();

    /// <summary>Cached tensors outlive the test's dispose scope.</summary>
    static Dictionary<string, Tensor> Keep(Dictionary<string, Tensor> d)
    {
        foreach (var t in d.Values) t.DetachFromDisposeScope();
        return d;
    }

    public static Tensor Input(string name) => _inputs.Value[name];
    public static Tensor Generation(string name) => _generation.Value[name];

    public static Tensor Ref(string model, string name)
    {
        lock (_refs)
        {
            if (!_refs.TryGetValue(model, out var d)) _refs[model] = d = Keep(SafeTensors.Load(Reference(model + ".safetensors")));
            return d[name];
        }
    }

    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return a.to_type(ScalarType.Float64).sub(b.to_type(ScalarType.Float64)).abs().max().item<double>();
    }

    /// <summary>
    /// A new folder under the system temp folder, removed when the test process exits (tests that clean up earlier
    /// may do so; the exit handler only removes what is still there), so a test run leaves nothing behind in /tmp.
    /// </summary>
    public static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "mlft-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        s_tempDirs.Add(d);
        return d;
    }

    static readonly System.Collections.Concurrent.ConcurrentBag<string> s_tempDirs = CreateTempDirRegistry();

    static System.Collections.Concurrent.ConcurrentBag<string> CreateTempDirRegistry()
    {
        var bag = new System.Collections.Concurrent.ConcurrentBag<string>();
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var d in bag)
                try { if (Directory.Exists(d)) Directory.Delete(d, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        return bag;
    }
}
