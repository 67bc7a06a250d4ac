using Microsoft.ML;
using ML.Finetune.Adapters;
using ML.Finetune.Estimators;
using ML.Finetune.Models;
using ML.Finetune.Testing;
using ML.Finetune.Tests.Estimators;
using ML.Finetune.Tests.Foundation;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;

namespace ML.Finetune.Tests.Lora;

public class LoraEstimatorTests
{
    static readonly object Lock = new();
    static string? _folder;

    /// <summary>A word-level Llama big enough (≈0.5 M weights) that "adapter ≪ base" is measurable; created once.</summary>
    static string BaseFolder
    {
        get
        {
            lock (Lock)
            {
                if (_folder != null) return _folder;
                var folder = Fixtures.TempDir();
                var words = TinyWordModel.Facts.SelectMany(f => (f.Prompt + " " + f.Completion).Split(' ')).Distinct().OrderBy(w => w, StringComparer.Ordinal).ToList();
                TokenizerFileWriter.WriteWordLevelTokenizerJson(folder, words, "<unk>", bosToken: "<s>", eosToken: "</s>", padToken: "<pad>");
                var tok = CausalLMTokenizer.FromFolder(folder);
                var config = new CausalLMConfig
                {
                    ModelType = "llama", VocabSize = tok.VocabSize, HiddenSize = 128, NumLayers = 2, NumHeads = 4, NumKeyValueHeads = 2, HeadDim = 32,
                    IntermediateSize = 512, MaxPositionEmbeddings = 64, NormEps = 1e-6, EosTokenIds = new[] { (long)tok.EosId!.Value },
                    PadTokenId = tok.PadId, BosTokenId = tok.BosId,
                };
                using var model = CausalLMFactory.CreateRandom(config, 11);
                CausalLMFactory.SavePretrained(model, folder);
                return _folder = folder;
            }
        }
    }

    static LoraFinetuneOptions Options(int steps) => new()
    {
        BaseModelPath = BaseFolder, MaxSteps = steps, LearningRate = 1e-2, BatchSize = 6, Seed = 3, Rank = 8, Alpha = 16,
        TargetModules = ["q_proj", "v_proj", "o_proj"], Schedule = LearningRateScheduleKind.Constant, MaxSequenceLength = 16,
        NumberOfThreads = 1, Generation = { MaxNewTokens = 6 },
    };

    [Fact]
    public void LoraFinetune_Trains_ZipIsSmall_AndSavesAndLoadsInAFreshProcess()
    {
        var ml = new MLContext(seed: 1);
        var data = TinyWordModel.Data(ml);
        using var model = ml.Transforms.LoraFinetune(Options(40)).Fit(data);
        var h = model.TrainingHistory.Records;
        Assert.Equal(40, h.Count);
        Assert.True(h[^1].CrossEntropy < 0.5 * h[0].CrossEntropy, $"CE {h[0].CrossEntropy} → {h[^1].CrossEntropy}");
        var lora = Assert.IsType<LoraMethod>(model.Method);
        Assert.Equal(6, lora.Targets.Count);
        Assert.True(lora.Summary!.Fraction < 0.05, lora.Summary.ToString());
        // The base weights did not move (compared in the dtype DType = Auto chose on this machine).
        using (var fresh = CausalLMFactory.LoadPretrained(BaseFolder, new ModelLoadOptions { DType = model.Model.ComputeDType }))
        {
            var trained = model.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in fresh.named_parameters()) Assert.Equal(0.0, Fixtures.MaxAbsDiff(p, trained[name]));
        }

        string expected = DataViewDump.ToJson(model.Transform(data));
        string dir = Fixtures.TempDir();
        try
        {
            string zip = Path.Combine(dir, "model.zip"), idv = Path.Combine(dir, "input.idv"), outJson = Path.Combine(dir, "out.json");
            ml.Model.Save(model, data.Schema, zip);
            long baseBytes = new FileInfo(Path.Combine(BaseFolder, CausalLMFactory.WeightsFile)).Length;
            long zipBytes = new FileInfo(zip).Length;
            Assert.True(zipBytes < 0.05 * baseBytes, $"zip {zipBytes} B vs base weights {baseBytes} B");
            Console.WriteLine($"[measure] LoRA zip {zipBytes} B = {100.0 * zipBytes / baseBytes:F2}% of base weights {baseBytes} B; CE {h[0].CrossEntropy:G4} → {h[^1].CrossEntropy:G4}; {lora.Summary}");
            using (var fs = File.Create(idv)) ml.Data.SaveAsBinary(data, fs);
            PersistenceRoundTripTests.RunProbe(zip, idv, outJson);
            Assert.Equal(expected, File.ReadAllText(outJson));
            var loaded = ml.Model.Load(zip, out _);
            Assert.Equal(expected, DataViewDump.ToJson(loaded.Transform(data)));
            (loaded as IDisposable)?.Dispose();

            // The trained adapter exports to PEFT and scores identically when imported onto a fresh base.
            string peft = Path.Combine(dir, "peft");
            PeftLoraIO.Export(model, peft);
            using var fresh = CausalLMFactory.LoadPretrained(BaseFolder, new ModelLoadOptions { DType = model.Model.ComputeDType });
            var imported = PeftLoraIO.Import(fresh, peft);
            var ids = TorchSharp.torch.tensor(new long[] { 1, 2, 3, 4, 5, 6 }).unsqueeze(0);
            var mask = TorchSharp.torch.ones_like(ids);
            Assert.Equal(0.0, Fixtures.MaxAbsDiff(imported.Logits(fresh, ids, mask), lora.Logits(model.Model, ids, mask)));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void LoraFinetune_Bf16Base_TrainsFp32Adapters()
    {
        var ml = new MLContext(seed: 1);
        var o = Options(20); o.DType = FinetuneDType.BFloat16;
        using var model = ml.Transforms.LoraFinetune(o).Fit(TinyWordModel.Data(ml));
        var lora = Assert.IsType<LoraMethod>(model.Method);
        Assert.All(lora.Targets, t => Assert.Equal(TorchSharp.torch.ScalarType.BFloat16, t.Layer.weight.dtype));
        Assert.All(lora.TrainableParameters, p => Assert.Equal(TorchSharp.torch.ScalarType.Float32, p.Parameter.dtype));
        var h = model.TrainingHistory.Records;
        Assert.True(h[^1].CrossEntropy < 0.8 * h[0].CrossEntropy, $"CE {h[0].CrossEntropy} → {h[^1].CrossEntropy}");
    }

    [Fact]
    public void LoraFinetune_BadRank_FailsAtConstruction()
    {
        var ml = new MLContext();
        var o = Options(1); o.Rank = 0;
        Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.LoraFinetune(o));
        var o2 = Options(1); o2.TargetModules = ["c_attn"];
        var e = Assert.Throws<ArgumentException>(() => ml.Transforms.LoraFinetune(o2).Fit(TinyWordModel.Data(ml)));
        Assert.Contains("q_proj", e.Message);
    }

    [Fact]
    public void MethodFactory_RecreatesLora_FromSavedState()
    {
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var method = PeftLoraIO.Import(m, Fixtures.Model("tiny-llama-lora"));
        var (tensors, json) = method.SaveState();
        var again = Assert.IsType<LoraMethod>(FinetuneMethodFactory.Create("lora", json));
        Assert.Equal(4, again.Config.Rank);
        Assert.Equal(8.0, again.Config.Alpha);
        Assert.Equal(["q_proj", "v_proj"], again.Config.TargetModules!);
    }
}
