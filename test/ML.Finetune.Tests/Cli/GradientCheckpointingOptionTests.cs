using Microsoft.ML;
using ML.Finetune.Models;
using ML.Finetune.Tests.Estimators;
using ML.Finetune.Transformers;

namespace ML.Finetune.Tests.Cli;

/// <summary>`finetune --gradient-checkpointing` reaches the trainer (layers are recomputed in the backward) and trains
/// the same model as without it (the losses of every step agree).</summary>
public class GradientCheckpointingOptionTests : IDisposable
{
    readonly string _dir = Fixtures.TempDir();
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    [Fact]
    public void Checkpointing_recomputes_layers_and_leaves_the_losses_unchanged()
    {
        string data = CliRunner.WriteData(_dir);
        double[] Train(string name, bool checkpointing, out long recomputed)
        {
            string outDir = Path.Combine(_dir, name);
            long before = LayerCheckpoint.RecomputedOnThisThread;
            string[] args = ["finetune", "--model", TinyWordModel.Folder, "--data", data, "--method", "lora", "--steps", "3",
                "--dtype", "float32", "--out", outDir];
            var r = CliRunner.InProcess(checkpointing ? [.. args, "--gradient-checkpointing"] : args);
            recomputed = LayerCheckpoint.RecomputedOnThisThread - before;
            Assert.True(r.ExitCode == 0, r.ToString());
            using var t = (FinetuneTransformer)new MLContext(0).Model.Load(Path.Combine(outDir, "model.zip"), out _);
            return t.TrainingHistory.Records.Select(x => x.TrainLoss).ToArray();
        }
        var plain = Train("plain", false, out long plainRecomputed);
        var checkpointed = Train("checkpointed", true, out long recomputed);
        Assert.Equal(0, plainRecomputed);
        Assert.True(recomputed > 0, "no layer was recomputed: the option did not reach the trainer");
        Assert.Equal(plain.Length, checkpointed.Length);
        for (int i = 0; i < plain.Length; i++) Assert.Equal(plain[i], checkpointed[i], 5);
    }
}
