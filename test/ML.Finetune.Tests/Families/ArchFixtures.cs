using ML.Finetune.Checkpoints;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Families;

/// <summary>
/// The newer-architecture HF fixtures (FixturesArch/, a copy of ../shared/fixtures-arch with its README) and the
/// supplementary references made by FixturesArch/extra/generate_extra.py (extra/README.md).
/// </summary>
internal static class ArchFixtures
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "FixturesArch");
    public static string Model(string name) => Path.Combine(Root, name);
    public static string Extra(string name) => Path.Combine(Root, "extra", name);

    /// <summary>Every model of the set, with its config's family.</summary>
    public static readonly string[] Models =
        ["tiny-llama3-rope", "tiny-llama-rope-linear", "tiny-llama-rope-dynamic", "tiny-qwen2-yarn", "tiny-qwen3", "tiny-phi3", "tiny-gemma2", "tiny-gemma3"];

    static readonly Dictionary<string, Dictionary<string, Tensor>> _files = new();

    static Dictionary<string, Tensor> File(string path)
    {
        lock (_files)
        {
            if (!_files.TryGetValue(path, out var d))
            {
                d = SafeTensors.Load(path);
                foreach (var t in d.Values) t.DetachFromDisposeScope();
                _files[path] = d;
            }
            return d;
        }
    }

    public static Tensor Input(string name) => File(Path.Combine(Root, "reference", "inputs.safetensors"))[name];
    public static Tensor Ref(string model, string name) => File(Path.Combine(Root, "reference", model + ".safetensors"))[name];
    public static bool HasRef(string model, string name) => File(Path.Combine(Root, "reference", model + ".safetensors")).ContainsKey(name);
    public static Tensor ExtraRef(string file, string name) => File(Path.Combine(Root, "extra", "reference", file + ".safetensors"))[name];
    public static IReadOnlyCollection<string> ExtraRefNames(string file) => File(Path.Combine(Root, "extra", "reference", file + ".safetensors")).Keys;
}
