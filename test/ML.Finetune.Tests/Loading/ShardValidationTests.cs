using System.Text.Json;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Loading;

/// <summary>Sharded checkpoints: a bad index, shard or tensor fails with a message naming the file and the tensor.</summary>
public class ShardValidationTests
{
    static string Sharded() => CheckpointVariants.Rewrite("tiny-llama", ScalarType.BFloat16, 3);

    static Dictionary<string, string> WeightMap(string dir)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, CausalLMFactory.IndexFile)));
        return doc.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(e => e.Name, e => e.Value.GetString()!);
    }

    static CheckpointFormatException LoadFails(string dir) =>
        Assert.Throws<CheckpointFormatException>(() => CausalLMFactory.LoadPretrained(dir));

    [Fact]
    public void IndexNamingTheWrongShard_IsRefused()
    {
        var dir = Sharded();
        var map = WeightMap(dir);
        string key = "model.norm.weight", wrong = map.Values.Distinct().First(f => f != map[key]);
        map[key] = wrong;
        CheckpointVariants.WriteIndex(dir, map);
        var e = LoadFails(dir);
        Assert.Contains(CausalLMFactory.IndexFile, e.Message);
        Assert.Contains($"'{key}'", e.Message);
        Assert.Contains(wrong, e.Message);
    }

    [Fact]
    public void ShardTensorMissingFromTheIndex_IsRefused()
    {
        var dir = Sharded();
        var map = WeightMap(dir);
        string key = "model.layers.1.mlp.down_proj.weight", shard = map[key];
        map.Remove(key);
        CheckpointVariants.WriteIndex(dir, map);
        var e = LoadFails(dir);
        Assert.Contains(Path.Combine(dir, shard), e.Message);
        Assert.Contains($"'{key}'", e.Message);
        Assert.Contains("not listed", e.Message);
    }

    [Fact]
    public void TensorInTwoShards_IsRefused()
    {
        var dir = Sharded();
        var map = WeightMap(dir);
        string key = "model.embed_tokens.weight", other = map.Values.Distinct().First(f => f != map[key]);
        var path = Path.Combine(dir, other);
        var tensors = SafeTensors.Load(path);
        using (var extra = SafeTensors.Load(Path.Combine(dir, map[key]), filter: k => k == key)[key]) tensors[key] = extra.clone();
        SafeTensors.Save(path, tensors);
        var e = LoadFails(dir);
        Assert.Contains($"'{key}'", e.Message);
        Assert.Contains("more than one shard", e.Message);
    }

    [Fact]
    public void CorruptOrTruncatedShard_NamesTheShard()
    {
        var dir = Sharded();
        var shard = Path.Combine(dir, WeightMap(dir).Values.Distinct().Order().Last());
        var bytes = File.ReadAllBytes(shard);
        File.WriteAllBytes(shard, bytes[..^2]); // data region shorter than the header says
        var e = LoadFails(dir);
        Assert.Contains(shard, e.Message);
        Assert.Contains("beyond the data region", e.Message);
    }

    [Fact]
    public void MissingShardFile_IsNamed()
    {
        var dir = Sharded();
        var shard = Path.Combine(dir, WeightMap(dir).Values.Distinct().Order().First());
        File.Delete(shard);
        var e = Assert.Throws<FileNotFoundException>(() => CausalLMFactory.LoadPretrained(dir));
        Assert.Contains(shard, e.Message);
    }

    [Fact]
    public void IntegerTensor_IsRefusedWithFileAndTensor()
    {
        var dir = Sharded();
        var map = WeightMap(dir);
        string key = "model.layers.0.input_layernorm.weight", path = Path.Combine(dir, map[key]);
        var tensors = SafeTensors.Load(path);
        tensors[key] = tensors[key].to_type(ScalarType.Int64);
        SafeTensors.Save(path, tensors);
        var e = LoadFails(dir);
        Assert.Contains(path, e.Message);
        Assert.Contains($"'{key}'", e.Message);
        Assert.Contains("non-floating dtype I64", e.Message);
    }
}
