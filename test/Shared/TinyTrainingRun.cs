using ML.Finetune.Models;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Shared;

/// <summary>
/// A small deterministic full-finetuning run (random tiny GPT-2 with dropout, so RNG state matters; synthetic
/// prompt → completion data) shared by the engine tests and test/ML.Finetune.TrainProbe.
/// </summary>
public static class TinyTrainingRun
{
    public static CausalLMConfig Config => new()
    {
        ModelType = "gpt2", VocabSize = 64, HiddenSize = 32, NumLayers = 2, NumHeads = 2, NumKeyValueHeads = 2, HeadDim = 16,
        IntermediateSize = 64, MaxPositionEmbeddings = 64, TieWordEmbeddings = true, HiddenAct = "gelu_new",
        ResidualDropout = 0.1, EosTokenIds = [2], PadTokenId = 0,
    };

    /// <summary>n examples: prompt [1, a, b], completion [(a+b) % 60 + 3, 2].</summary>
    public static List<EncodedExample> Data(int n, int seed)
    {
        var r = new Random(seed);
        var list = new List<EncodedExample>();
        for (int i = 0; i < n; i++)
        {
            long a = r.Next(3, 60), b = r.Next(3, 60);
            long[] ids = [1, a, b, (a + b) % 60 + 3, 2];
            long[] labels = [-100, -100, -100, ids[3], 2];
            list.Add(new EncodedExample(ids, labels));
        }
        return list;
    }

    public static (CausalLM Model, FullFinetuneMethod Method) Create(long seed = 11, ScalarType dtype = ScalarType.Float32)
    {
        var model = CausalLMFactory.CreateRandom(Config, seed, dtype);
        var method = new FullFinetuneMethod();
        method.Attach(model, seed);
        return (model, method);
    }

    public static Dictionary<string, Tensor> Weights(IFinetuneMethod method) =>
        method.TrainableParameters.ToDictionary(p => p.Name, p => p.Parameter.detach().clone());
}
