using System.Security.Cryptography;
using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Training;

/// <summary>
/// Full finetuning's θ_p for weights loaded as the mapped checkpoint is a second mapping of the file, not a copy:
/// no copy bytes, the distance and the file as before, and a copy wherever the weights no longer equal the file.
/// </summary>
public class MappedPretrainedTests
{
    static long Bytes(IEnumerable<Tensor> ts) => ts.Sum(t => t.NumberOfElements * t.ElementSize);

    static string CopyOfFixture(string name)
    {
        string dir = Path.Combine(Fixtures.TempDir(), name);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Fixtures.Model(name))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    static byte[] Hash(string folder) =>
        SHA256.HashData(Directory.GetFiles(folder, "*.safetensors").OrderBy(f => f).SelectMany(File.ReadAllBytes).ToArray());

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-gpt2")] // Conv1D weights are stored transposed: those are copied, the rest mapped
    public void MappedWeights_GetAMappedThetaP_AndTheDistanceIsUnchanged(string fixture)
    {
        string folder = CopyOfFixture(fixture);
        var before = Hash(folder);
        using var model = CausalLMFactory.LoadPretrained(folder, new ModelLoadOptions { DType = ScalarType.Float32 });
        Assert.NotEmpty(model.MappedWeights);
        using var method = new FullFinetuneMethod();
        method.Attach(model, 0);
        var notMapped = method.TrainableParameters.Where(p => !model.MappedWeights.ContainsKey(p.Name)).Select(p => p.Parameter);
        Assert.Equal(Bytes(notMapped), method.PretrainedCopyBytes);
        if (fixture == "tiny-llama") Assert.Equal(0, method.PretrainedCopyBytes);
        using (torch.no_grad()) Assert.Equal(0.0, method.DistanceFromPretrainedSquared().ToDouble());

        // A training-like in-place update of every weight: the distance is exactly the update's norm, θ_p and the file stay.
        double expected = 0;
        using (torch.no_grad())
            foreach (var (_, p) in method.TrainableParameters)
            {
                using var delta = torch.full_like(p, 1e-3);
                p.add_(delta);
                expected += delta.square().sum().ToDouble();
            }
        using (torch.no_grad()) Assert.Equal(expected, method.DistanceFromPretrainedSquared().ToDouble(), expected * 1e-5);
        Assert.Equal(before, Hash(folder));
        using var reread = CausalLMFactory.LoadPretrained(folder, new ModelLoadOptions { DType = ScalarType.Float32, MapWeights = false });
        var original = reread.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using var copy = method.PretrainedCopy(model); // θ_p as a model: built on the kept θ_p tensors
        foreach (var (name, p) in copy.named_parameters())
            Assert.True(torch.equal(p, original[name]).all().item<bool>(), $"θ_p of '{name}' is not the checkpoint's value");
    }

    [Fact]
    public void CopiedWeights_OrWeightsChangedAfterLoading_GetACopy()
    {
        using var copied = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"), new ModelLoadOptions { DType = ScalarType.Float32, MapWeights = false });
        Assert.Empty(copied.MappedWeights);
        using var m1 = new FullFinetuneMethod();
        m1.Attach(copied, 0);
        Assert.Equal(Bytes(m1.TrainableParameters.Select(p => p.Parameter)), m1.PretrainedCopyBytes);

        using var mapped = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"), new ModelLoadOptions { DType = ScalarType.Float32 });
        var (changedName, changed) = mapped.named_parameters().First(p => p.parameter.dim() == 2);
        using (torch.no_grad()) changed.mul_(2.0); // the weights no longer equal the file
        using var m2 = new FullFinetuneMethod();
        m2.Attach(mapped, 0);
        Assert.Equal(changed.NumberOfElements * changed.ElementSize, m2.PretrainedCopyBytes);
        // θ_p is the weights as they were at Attach, as for a copy: distance 0 now, and after a change of that weight too.
        using (torch.no_grad())
        {
            Assert.Equal(0.0, m2.DistanceFromPretrainedSquared().ToDouble());
            changed.add_(1.0);
            Assert.Equal(changed.NumberOfElements, m2.DistanceFromPretrainedSquared().ToDouble(), 1e-3);
        }
        Assert.Contains(changedName, mapped.MappedWeights.Keys);
    }
}
