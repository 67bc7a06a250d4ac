using Microsoft.ML;
using ML.Finetune.Estimators;
using ML.Finetune.Tests.Estimators;
using ML.Finetune.Transformers;

namespace ML.Finetune.Tests.Cli;

/// <summary>`finetune --dtype` reaches the estimator: the saved model records the dtype it trained in.</summary>
public class DTypeOptionTests : IDisposable
{
    readonly string _dir = Fixtures.TempDir();
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    [Theory]
    [InlineData("float32", FinetuneDType.Float32)]
    [InlineData("bfloat16", FinetuneDType.BFloat16)]
    public void The_dtype_option_decides_the_compute_dtype(string option, FinetuneDType expected)
    {
        string data = CliRunner.WriteData(_dir);
        string outDir = Path.Combine(_dir, option);
        var r = CliRunner.InProcess(["finetune", "--model", TinyWordModel.Folder, "--data", data, "--method", "lora", "--steps", "1",
            "--dtype", option, "--out", outDir]);
        Assert.True(r.ExitCode == 0, r.ToString());
        var ml = new MLContext(0);
        using var t = (FinetuneTransformer)ml.Model.Load(Path.Combine(outDir, "model.zip"), out _);
        Assert.Equal(expected, t.Settings.DType);
    }

    [Fact]
    public void An_unknown_dtype_is_a_usage_error()
    {
        string data = CliRunner.WriteData(_dir);
        CliRunner.AssertError(CliRunner.InProcess(["finetune", "--model", TinyWordModel.Folder, "--data", data, "--method", "lora",
            "--dtype", "float16", "--out", Path.Combine(_dir, "o")]), 2, "--dtype", "auto, float32, bfloat16");
    }
}
