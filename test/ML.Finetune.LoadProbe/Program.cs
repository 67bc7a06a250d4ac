// Usage:
//   LoadProbe <model.zip> <input.idv> <output.json>     loads with mlContext.Model.Load, transforms the binary IDataView
//                                                       and dumps every column bit-exactly
//   LoadProbe predict <model.zip> <rows.json> <out.json> loads, then one PredictionEngine<PromptRow, Prediction> call per
//                                                       row of [{"Prompt","Completion"}]; writes the predictions (floats as bits)
//   LoadProbe native-check                              makes TorchSharp load through the library; prints how, and a tensor sum
using System.Text.Json;
using Microsoft.ML;
using ML.Finetune.Runtime;

if (args.Length == 1 && args[0] == "native-check")
{
    try
    {
        TorchNativeLibrary.EnsureLoaded();
        Console.WriteLine("state: " + TorchNativeLibrary.State);
        Console.WriteLine("sum: " + TorchSharp.torch.ones(3).sum().item<float>());
        return 0;
    }
    catch (TorchNativeLoadException e)
    {
        Console.Error.WriteLine("error: " + e.Message);
        return 1;
    }
}

var ml = new MLContext(seed: 1);
if (args.Length == 4 && args[0] == "predict")
{
    var model = ml.Model.Load(args[1], out _);
    var rows = JsonSerializer.Deserialize<List<PromptRow>>(File.ReadAllText(args[2]))!;
    using var engine = ml.Model.CreatePredictionEngine<PromptRow, Prediction>(model);
    var output = rows.Select(r => engine.Predict(r)).Select(p => new Dictionary<string, string>
    {
        ["GeneratedText"] = p.GeneratedText,
        ["Score"] = BitConverter.SingleToInt32Bits(p.Score).ToString("x8"),
        ["ScorePerToken"] = BitConverter.SingleToInt32Bits(p.ScorePerToken).ToString("x8"),
    }).ToList();
    File.WriteAllText(args[3], JsonSerializer.Serialize(output));
    return 0;
}
if (args.Length != 3) { Console.Error.WriteLine("usage: LoadProbe <model.zip> <input.idv> <output.json> | predict <model.zip> <rows.json> <out.json> | native-check"); return 2; }
var loaded = ml.Model.Load(args[0], out _);
var input = ml.Data.LoadFromBinary(args[1]);
File.WriteAllText(args[2], ML.Finetune.Testing.DataViewDump.ToJson(loaded.Transform(input)));
return 0;

sealed class PromptRow
{
    public string Prompt { get; set; } = "";
    public string Completion { get; set; } = "";
}

sealed class Prediction
{
    public string GeneratedText { get; set; } = "";
    public float Score { get; set; }
    public float ScorePerToken { get; set; }
}
