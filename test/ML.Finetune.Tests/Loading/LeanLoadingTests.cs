using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using ML.Finetune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Loading;

/// <summary>
/// The lean loader (meta construction, per-tensor copy from the memory-mapped files) gives the parameters the old
/// loader gave (float32 model, whole tensors read, then cast), bit for bit, for every stored/target dtype pair,
/// single file and sharded.
/// </summary>
public class LeanLoadingTests
{
    /// <summary>Same stored and target dtype: mapped (the default) and copied; otherwise always converted copies.</summary>
    public static TheoryData<string, string, string, int, bool> DTypePaths()
    {
        var d = new TheoryData<string, string, string, int, bool>();
        foreach (var model in new[] { "tiny-gpt2", "tiny-llama", "tiny-qwen2" })
            foreach (var (stored, target) in new[] { ("F32", "F32"), ("BF16", "BF16"), ("F32", "BF16"), ("BF16", "F32"), ("F16", "BF16") })
                foreach (var shards in new[] { 1, 3 })
                    foreach (var map in stored == target ? new[] { true, false } : [true])
                        d.Add(model, stored, target, shards, map);
        return d;
    }

    static ScalarType Type(string s) => SafeTensors.ScalarTypeOf(s);

    [Theory, MemberData(nameof(DTypePaths))]
    public void EveryDTypePath_GivesTheOldLoadersParameters_BitForBit(string model, string stored, string target, int shards, bool map)
    {
        using var scope = NewDisposeScope();
        string dir = CheckpointVariants.Rewrite(model, Type(stored), shards);
        var reference = CheckpointVariants.ReferenceLoad(dir, Type(target));
        using var m = CausalLMFactory.LoadPretrained(dir, new ModelLoadOptions { DType = Type(target), MapWeights = map });
        var loaded = m.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.Equal(reference.Keys.Order(), loaded.Keys.Order());
        foreach (var (name, p) in loaded)
        {
            Assert.Equal(DeviceType.CPU, p.device_type);
            Assert.True(p.requires_grad, name); // as before: the methods decide what trains
            CheckpointVariants.AssertSameBits(reference[name], p, name);
        }
        Assert.False(m.training);
    }

    [Fact]
    public void Float32ToBf16_RoundsNaNInfZerosSubnormalsAndTiesLikeTheOldCast()
    {
        using var scope = NewDisposeScope();
        string dir = CheckpointVariants.Rewrite("tiny-llama", ScalarType.Float32, 1);
        var tensors = SafeTensors.Load(Path.Combine(dir, CausalLMFactory.WeightsFile));
        // Bit patterns that exercise bf16 rounding: NaNs (quiet, signalling, negative), ±inf, ±0, subnormals, values
        // exactly halfway between two bf16 numbers (ties to even, both directions), and the largest finite float.
        uint[] bits = [0x7FC00000, 0x7F800001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x00000000, 0x80000000, 0x00000001,
            0x807FFFFF, 0x3F808000, 0x3F818000, 0x3F808001, 0xBF818000, 0x7F7FFFFF, 0x3F7FFFFF, 0x00FF8000];
        var special = tensor(bits.Select(b => BitConverter.UInt32BitsToSingle(b)).ToArray());
        var w = tensors["model.layers.0.mlp.up_proj.weight"];
        w.view(-1).narrow(0, 0, bits.Length).copy_(special);
        SafeTensors.Save(Path.Combine(dir, CausalLMFactory.WeightsFile), tensors);
        var reference = CheckpointVariants.ReferenceLoad(dir, ScalarType.BFloat16);
        using var m = CausalLMFactory.LoadPretrained(dir, new ModelLoadOptions { DType = ScalarType.BFloat16 });
        foreach (var (name, p) in m.named_parameters()) CheckpointVariants.AssertSameBits(reference[name], p, name);
    }

    [Fact]
    public void MappedWeights_AreTheFile_CopyOnWrite_AndReleasedWithTheModel()
    {
        string dir = CheckpointVariants.Rewrite("tiny-llama", ScalarType.BFloat16, 2);
        var reference = CheckpointVariants.ReferenceLoad(dir, ScalarType.BFloat16);
        var files = CausalLMFactory.WeightFiles(dir);
        var before = files.Select(File.ReadAllBytes).ToList();
        var m = CausalLMFactory.LoadPretrained(dir, new ModelLoadOptions { DType = ScalarType.BFloat16 }); // mapped by default
        var owners = m.parameters().Select(NativeTensors.OwnerOf).ToList();
        Assert.All(owners, o => Assert.NotNull(o)); // every parameter is a view of the mapped file, no copy
        using (NewDisposeScope())
        {
            foreach (var (name, p) in m.named_parameters()) CheckpointVariants.AssertSameBits(reference[name], p, name);
            using (no_grad()) foreach (var p in m.parameters()) p.add_(1); // private pages: the files must not change
            for (int i = 0; i < files.Count; i++) Assert.Equal(before[i], File.ReadAllBytes(files[i]));
            var input = new CausalLMInput { InputIds = tensor(new long[,] { { 1, 5, 9, 3 } }) };
            Assert.False(m.Forward(input).Logits.isnan().any().item<bool>());
        }
        m.Dispose();
        foreach (var t in reference.Values) t.Dispose();
        Assert.All(owners, o => Assert.False(NativeTensors.IsLive(o!))); // the mappings went with the parameters
    }

    [Fact]
    public void MapWeights_CopiesWhatNeedsConvertingOrIsOff()
    {
        string dir = CheckpointVariants.Rewrite("tiny-gpt2", ScalarType.Float32, 1);
        using var m = CausalLMFactory.LoadPretrained(dir, new ModelLoadOptions { DType = ScalarType.Float32 });
        // GPT-2's Conv1D weights are stored transposed: those 8 are copies, everything else is mapped.
        var copied = m.named_parameters().Where(p => NativeTensors.OwnerOf(p.parameter) == null).Select(p => p.name).ToList();
        Assert.Equal(m.named_parameters().Where(p => Gpt2LMHeadModel.IsConv1DWeight(p.name)).Select(p => p.name), copied);
        Assert.Equal(8, copied.Count);
        using var off = CausalLMFactory.LoadPretrained(dir, new ModelLoadOptions { DType = ScalarType.Float32, MapWeights = false });
        Assert.All(off.parameters(), p => Assert.Null(NativeTensors.OwnerOf(p)));
        using var bf16 = CausalLMFactory.LoadPretrained(dir, new ModelLoadOptions { DType = ScalarType.BFloat16 });
        Assert.All(bf16.parameters(), p => Assert.Null(NativeTensors.OwnerOf(p)));
    }
}
