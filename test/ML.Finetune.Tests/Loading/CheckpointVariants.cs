using System.Text.Json;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Loading;

/// <summary>
/// Rewrites of the HF fixtures (other stored dtype, sharded with an index) and the loader as it was before lean
/// loading, kept here as the reference: a float32 model on the CPU, each stored tensor read whole with a plain
/// FileStream, copied in (GPT-2's Conv1D transposed), then the whole model cast to the target dtype.
/// </summary>
internal static class CheckpointVariants
{
    /// <summary>A copy of fixture <paramref name="model"/> whose tensors are stored as <paramref name="dtype"/>, in <paramref name="shards"/> files.</summary>
    public static string Rewrite(string model, ScalarType dtype, int shards)
    {
        var dir = Fixtures.TempDir();
        foreach (var f in Directory.GetFiles(Fixtures.Model(model)).Where(f => !f.EndsWith(".safetensors")))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var tensors = SafeTensors.Load(Path.Combine(Fixtures.Model(model), CausalLMFactory.WeightsFile));
        try
        {
            var converted = tensors.ToDictionary(kv => kv.Key, kv => kv.Value.to_type(dtype));
            WriteShards(dir, converted, shards);
            foreach (var t in converted.Values) t.Dispose();
        }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
        return dir;
    }

    /// <summary>model.safetensors (1 shard) or model-0000i-of-0000n.safetensors + model.safetensors.index.json.</summary>
    public static void WriteShards(string dir, IReadOnlyDictionary<string, Tensor> tensors, int shards)
    {
        if (shards == 1) { SafeTensors.Save(Path.Combine(dir, CausalLMFactory.WeightsFile), tensors); return; }
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        var map = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int s = 0; s < shards; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
            var part = names.Where((_, i) => i % shards == s).ToDictionary(n => n, n => tensors[n]);
            SafeTensors.Save(Path.Combine(dir, file), part);
            foreach (var n in part.Keys) map[n] = file;
        }
        WriteIndex(dir, map);
    }

    public static void WriteIndex(string dir, IReadOnlyDictionary<string, string> weightMap) =>
        File.WriteAllText(Path.Combine(dir, CausalLMFactory.IndexFile),
            JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = weightMap }));

    /// <summary>The pre-lean loader (see the class summary).</summary>
    public static Dictionary<string, Tensor> ReferenceLoad(string folder, ScalarType dtype)
    {
        var config = CausalLMConfig.Load(folder);
        using var model = CausalLMFactory.Create(config);
        var expected = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad())
            foreach (var file in CausalLMFactory.WeightFiles(folder))
            {
                var header = SafeTensors.ReadHeader(file);
                using var fs = File.OpenRead(file);
                foreach (var info in header.Tensors.Values)
                {
                    if (!expected.TryGetValue(info.Name, out var p)) continue;
                    var buf = new byte[info.End - info.Begin];
                    fs.Seek(header.DataStart + info.Begin, SeekOrigin.Begin);
                    fs.ReadExactly(buf);
                    using var t = empty(info.Shape, SafeTensors.ScalarTypeOf(info.DType));
                    t.bytes = buf;
                    bool conv1d = config.IsGpt2 && Gpt2LMHeadModel.IsConv1DWeight(info.Name);
                    p.copy_(conv1d ? t.t() : t);
                }
            }
        if (dtype != ScalarType.Float32) model.to(dtype);
        return model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
    }

    /// <summary>Bit-level equality (NaN payloads and signed zeros included), with the first difference in the message.</summary>
    public static void AssertSameBits(Tensor expected, Tensor actual, string name)
    {
        Assert.Equal(expected.dtype, actual.dtype);
        Assert.Equal(expected.shape, actual.shape);
        var e = expected.contiguous().bytes.ToArray();
        var a = actual.cpu().contiguous().bytes.ToArray();
        int i = e.AsSpan().CommonPrefixLength(a);
        Assert.True(i == e.Length && e.Length == a.Length, $"{name}: bytes differ from offset {i} of {e.Length}");
    }
}
