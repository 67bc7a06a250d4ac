using System.IO.Compression;
using Microsoft.ML;
using ML.Finetune.Adapters;
using ML.Finetune.Checkpoints;
using ML.Finetune.Estimators;
using ML.Finetune.Testing;
using ML.Finetune.Tests.Estimators;
using ML.Finetune.Tests.Foundation;
using ML.Finetune.Training;
using ML.Finetune.Transformers;

namespace ML.Finetune.Tests.PromptPrefix;

/// <summary>The ML.NET surface of prompt and prefix tuning: fit, zip contents, fresh-process Save/Load.</summary>
public class PromptPrefixEstimatorTests
{
    static T Configure<T>(T o, int steps) where T : FinetuneOptions
    {
        o.BaseModelPath = TinyWordModel.Folder; o.MaxSteps = steps; o.BatchSize = 6; o.Seed = 3; o.LearningRate = 0.05;
        o.Schedule = LearningRateScheduleKind.Constant; o.MaxSequenceLength = 16; o.NumberOfThreads = 1;
        o.Generation.MaxNewTokens = 4;
        return o;
    }

    static IEstimator<FinetuneTransformer> Estimator(MLContext ml, string kind, int steps) => kind switch
    {
        "prompt" => ml.Transforms.PromptTune(Configure(new PromptTuneOptions { NumVirtualTokens = 3, InitRange = 0.1 }, steps)),
        "prefix" => ml.Transforms.PrefixTune(Configure(new PrefixTuneOptions { NumVirtualTokens = 3, InitStd = 0.5 }, steps)),
        _ => ml.Transforms.PrefixTune(Configure(new PrefixTuneOptions { NumVirtualTokens = 3, PrefixProjection = true, EncoderHiddenSize = 16, InitStd = 0.5 }, steps)),
    };

    [Theory]
    [InlineData("prompt")]
    [InlineData("prefix")]
    [InlineData("prefix-mlp")]
    public void Fit_LowersLoss_ZipHoldsOnlyPrefix_FreshProcessLoadIdentical(string kind)
    {
        var ml = new MLContext(seed: 1);
        var data = TinyWordModel.Data(ml);
        using var model = Estimator(ml, kind, 30).Fit(data);
        Assert.Equal(kind == "prompt" ? "prompt" : "prefix", model.Method.Name);
        var h = model.TrainingHistory.Records;
        Assert.True(h[^1].CrossEntropy < h[0].CrossEntropy, $"CE {h[0].CrossEntropy} → {h[^1].CrossEntropy}");
        if (model.Method is PrefixTuningMethod px) Assert.False(px.HasProjection); // the MLP is folded after training
        Assert.All(model.Model.parameters(), p => Assert.False(p.requires_grad));
        string expected = DataViewDump.ToJson(model.Transform(data));

        string dir = Fixtures.TempDir();
        try
        {
            string zip = Path.Combine(dir, "model.zip"), idv = Path.Combine(dir, "input.idv"), outJson = Path.Combine(dir, "out.json");
            ml.Model.Save(model, data.Schema, zip);
            using (var fs = File.Create(idv)) ml.Data.SaveAsBinary(data, fs);

            // Only the prefix parameters (+ a reference to the base model): no base weights, no MLP.
            using (var archive = ZipFile.OpenRead(zip))
            {
                var weights = Assert.Single(archive.Entries, e => e.FullName.EndsWith("weights.safetensors"));
                string file = Path.Combine(dir, "w.safetensors");
                weights.ExtractToFile(file);
                var header = SafeTensors.ReadHeader(file);
                Assert.Equal([kind == "prompt" ? PromptTuningMethod.TensorName : PrefixTuningMethod.TensorName], header.Tensors.Keys);
                Assert.DoesNotContain(archive.Entries, e => e.FullName.Contains("model.safetensors") || e.FullName.Contains("/base/"));
                long baseBytes = new FileInfo(Path.Combine(TinyWordModel.Folder, "model.safetensors")).Length;
                Assert.True(archive.Entries.Sum(e => e.Length) < baseBytes / 4, "the zip holds more than the prefix");
            }
            PersistenceRoundTripTests.RunProbe(zip, idv, outJson);
            Assert.Equal(expected, File.ReadAllText(outJson));

            // The trained method exports as a PEFT adapter that scores identically when imported again.
            string peft = Path.Combine(dir, "peft");
            PeftPromptLearning.Save(model.Method, model.Model, peft, TinyWordModel.Folder);
            var again = PeftPromptLearning.Load(peft, model.Model);
            var ids = TorchSharp.torch.tensor(new long[] { 3, 4, 5, 6, 7 }).view(1, 5);
            var mask = TorchSharp.torch.ones_like(ids);
            Assert.Equal(0.0, Fixtures.MaxAbsDiff(again.Logits(model.Model, ids, mask), model.Method.Logits(model.Model, ids, mask)), 6);
            (again as IDisposable)?.Dispose();
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void FactoryCreatesBothMethods_FromTheirSavedConfig()
    {
        var p = FinetuneMethodFactory.Create("prompt", """{"num_virtual_tokens":5,"init":"Text","init_range":0.5,"init_text":"a b","init_token_ids":[4,5]}""");
        Assert.Equal(5, Assert.IsType<PromptTuningMethod>(p).NumVirtualTokens);
        Assert.Equal([4L, 5L], ((PromptTuningMethod)p).Options.InitTokenIds!);
        var x = FinetuneMethodFactory.Create("prefix", """{"num_virtual_tokens":2,"prefix_projection":true,"encoder_hidden_size":7,"init_std":0.5}""");
        var px = Assert.IsType<PrefixTuningMethod>(x);
        Assert.Equal((2, true, 7), (px.NumVirtualTokens, px.Options.PrefixProjection, px.Options.EncoderHiddenSize));
    }
}
