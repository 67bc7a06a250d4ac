using System.Text;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using Xunit;
using static TorchSharp.torch;

namespace ML.Finetune.Tests;

/// <summary>Malformed or unsupported checkpoints fail with our exception types and messages naming file and field.</summary>
public class CheckpointValidationTests
{
    /// <summary>Copies a fixture model folder to a fresh temp dir.</summary>
    static string CopyModel(string name)
    {
        var dst = Fixtures.TempDir();
        foreach (var f in Directory.GetFiles(Fixtures.Model(name))) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    /// <summary>Writes a safetensors file with a raw header string and a data region of the given size.</summary>
    internal static string RawSafetensors(string header, int dataBytes, ulong? declaredLength = null)
    {
        var path = Path.Combine(Fixtures.TempDir(), "t.safetensors");
        var h = Encoding.UTF8.GetBytes(header);
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes(declaredLength ?? (ulong)h.Length));
        fs.Write(h);
        fs.Write(new byte[dataBytes]);
        return path;
    }

    static void AssertFormat(Action a, params string[] mustContain)
    {
        var e = Assert.Throws<CheckpointFormatException>(a);
        foreach (var s in mustContain) Assert.Contains(s, e.Message);
    }

    [Fact]
    public void UnknownModelType_ListsSupported()
    {
        var dir = CopyModel("tiny-llama");
        File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(dir, "config.json")).Replace("\"llama\"", "\"falcon\""));
        var e = Assert.Throws<UnsupportedModelException>(() => CausalLMFactory.LoadPretrained(dir));
        Assert.Contains("falcon", e.Message);
        Assert.Contains("gpt2, llama, qwen2, mistral", e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void MissingConfig_NamesPath()
    {
        var dir = CopyModel("tiny-gpt2");
        File.Delete(Path.Combine(dir, "config.json"));
        var e = Assert.Throws<FileNotFoundException>(() => CausalLMFactory.LoadPretrained(dir));
        Assert.Contains(Path.Combine(dir, "config.json"), e.Message);
    }

    [Fact]
    public void MissingWeights_NamesPath()
    {
        var dir = CopyModel("tiny-gpt2");
        File.Delete(Path.Combine(dir, "model.safetensors"));
        var e = Assert.Throws<FileNotFoundException>(() => CausalLMFactory.LoadPretrained(dir));
        Assert.Contains("model.safetensors", e.Message);
    }

    [Fact]
    public void BadConfigField_NamesField()
    {
        var dir = CopyModel("tiny-llama");
        File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(dir, "config.json")).Replace("\"hidden_size\": 64", "\"hidden_size\": \"big\""));
        AssertFormat(() => CausalLMFactory.LoadPretrained(dir), "hidden_size", "config.json");
        File.WriteAllText(Path.Combine(dir, "config.json"), "{ not json");
        AssertFormat(() => CausalLMFactory.LoadPretrained(dir), "config.json");
    }

    [Fact]
    public void HeaderLengthBeyondFile_Refused()
    {
        var p = RawSafetensors("{}", 0, declaredLength: 1000);
        AssertFormat(() => SafeTensors.ReadHeader(p), p, "header length");
    }

    [Fact]
    public void HeaderOverCap_Refused()
    {
        // A sparse 101 MB file whose declared header fits the file but exceeds the 100 MB cap.
        var path = Path.Combine(Fixtures.TempDir(), "big.safetensors");
        using (var fs = File.Create(path))
        {
            fs.Write(BitConverter.GetBytes((ulong)(SafeTensors.MaxHeaderBytes + 1)));
            fs.SetLength(SafeTensors.MaxHeaderBytes + 16);
        }
        AssertFormat(() => SafeTensors.ReadHeader(path), path, "cap");
        File.Delete(path);
    }

    [Fact]
    public void OffsetsOutOfRange_Refused()
    {
        var p = RawSafetensors("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
        AssertFormat(() => SafeTensors.ReadHeader(p), p, "'w'", "beyond");
    }

    [Fact]
    public void OverlappingOffsets_Refused()
    {
        var p = RawSafetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16);
        AssertFormat(() => SafeTensors.ReadHeader(p), p, "overlap");
    }

    [Fact]
    public void DTypeShapeVsByteLengthMismatch_Refused()
    {
        var p = RawSafetensors("{\"w\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
        AssertFormat(() => SafeTensors.ReadHeader(p), p, "'w'", "needs 6");
        var q = RawSafetensors("{\"w\":{\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
        AssertFormat(() => SafeTensors.ReadHeader(q), "'w'", "unknown dtype");
    }

    [Fact]
    public void TensorShapeVsConfigMismatch_NamesTensorAndShapes()
    {
        var dir = CopyModel("tiny-llama");
        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        w["model.norm.weight"] = zeros(63);
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), w);
        AssertFormat(() => CausalLMFactory.LoadPretrained(dir), "model.norm.weight", "[63]", "[64]");
    }

    [Fact]
    public void MissingAndUnexpectedTensors_Named()
    {
        var dir = CopyModel("tiny-llama");
        var path = Path.Combine(dir, "model.safetensors");
        var w = SafeTensors.Load(path);
        w.Remove("model.layers.1.mlp.up_proj.weight");
        SafeTensors.Save(path, w);
        AssertFormat(() => CausalLMFactory.LoadPretrained(dir), "model.layers.1.mlp.up_proj.weight");
        w["model.layers.1.mlp.up_proj.weight"] = zeros(128, 64);
        w["model.extra.weight"] = zeros(2);
        SafeTensors.Save(path, w);
        AssertFormat(() => CausalLMFactory.LoadPretrained(dir), "model.extra.weight", "unexpected");
    }

    [Fact]
    public void PickleWeights_Refused_EvenWhenAllowed()
    {
        var dir = CopyModel("tiny-gpt2");
        File.Delete(Path.Combine(dir, "model.safetensors"));
        File.WriteAllBytes(Path.Combine(dir, "pytorch_model.bin"), [0x80, 0x02]);
        var e = Assert.Throws<UnsupportedModelException>(() => CausalLMFactory.LoadPretrained(dir));
        Assert.Contains("pytorch_model.bin", e.Message);
        Assert.Contains("pickle", e.Message);
        var e2 = Assert.Throws<UnsupportedModelException>(() => CausalLMFactory.LoadPretrained(dir, new ModelLoadOptions { AllowPickle = true }));
        Assert.Contains("not implemented", e2.Message);
    }

    [Fact]
    public void SafeTensors_RoundTrip_AllDTypes_SortedKeysAndMetadata()
    {
        var path = Path.Combine(Fixtures.TempDir(), "rt.safetensors");
        var t = new Dictionary<string, Tensor>
        {
            ["z"] = arange(6, ScalarType.Float32).reshape(2, 3), ["a"] = arange(4, ScalarType.Int64),
            ["h"] = ones(3, ScalarType.BFloat16), ["f16"] = ones(2, ScalarType.Float16), ["b"] = ones(2, ScalarType.Bool),
            ["e"] = zeros(0, ScalarType.Float32),
        };
        SafeTensors.Save(path, t, new Dictionary<string, string> { ["format"] = "pt" });
        var h = SafeTensors.ReadHeader(path);
        Assert.Equal("pt", h.Metadata["format"]);
        Assert.Equal(0, h.DataStart % 8);
        var back = SafeTensors.Load(path);
        foreach (var (k, v) in t) Assert.True(v.numel() == 0 || Fixtures.MaxAbsDiff(v, back[k]) == 0, k);
        Assert.Equal(ScalarType.BFloat16, back["h"].dtype);
        Assert.Equal(ScalarType.Float32, SafeTensors.Load(path, ScalarType.Float32)["h"].dtype);
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, "*.tmp"));
    }
}
