// A console app outside the repository that takes ML.Finetune as a NuGet package (PackageConsumerTests builds it).
//   train <base model folder> <model.zip>   LoRA-finetunes on a few rows, saves, prints Transform's outputs
//   predict <model.zip>                      loads (a new process), prints PredictionEngine outputs for the same rows
// Each output line: generated text <TAB> score <TAB> score per token (floats as round-trip strings).
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using ML.Finetune;
using ML.Finetune.Estimators;
using ML.Finetune.Runtime;

var rows = new[]
{
    new Row { Prompt = "where is harvard", Completion = "cambridge massachusetts" },
    new Row { Prompt = "where is yale", Completion = "new haven" },
    new Row { Prompt = "where is rice", Completion = "houston" },
    new Row { Prompt = "where is duke", Completion = "durham" },
};
string F(float v) => v.ToString("R", CultureInfo.InvariantCulture);
var ml = new MLContext(seed: 1);
if (args is ["train", var baseModel, var zip])
{
    var data = ml.Data.LoadFromEnumerable(rows);
    using var model = ml.Transforms.LoraFinetune(new LoraFinetuneOptions
    {
        BaseModelPath = baseModel, Rank = 2, Alpha = 4, MaxSteps = 20, BatchSize = 4, LearningRate = 3e-2, NumberOfThreads = 1,
        Generation = { MaxNewTokens = 4 },
    }).Fit(data);
    Console.WriteLine("native: " + TorchNativeLibrary.State);
    ml.Model.Save(model, data.Schema, zip);
    var scored = model.Transform(data);
    var text = scored.GetColumn<string>("GeneratedText").ToList();
    var score = scored.GetColumn<float>("Score").ToList();
    var perToken = scored.GetColumn<float>("ScorePerToken").ToList();
    for (int i = 0; i < rows.Length; i++) Console.WriteLine($"{text[i]}\t{F(score[i])}\t{F(perToken[i])}");
    return 0;
}
if (args is ["predict", var saved])
{
    var model = ml.Model.Load(saved, out _);
    Console.WriteLine("native: " + TorchNativeLibrary.State);
    using var engine = ml.Model.CreatePredictionEngine<Row, Prediction>(model);
    foreach (var r in rows)
    {
        var p = engine.Predict(r);
        Console.WriteLine($"{p.GeneratedText}\t{F(p.Score)}\t{F(p.ScorePerToken)}");
    }
    return 0;
}
Console.Error.WriteLine("usage: Consumer train <base model folder> <model.zip> | predict <model.zip>");
return 2;

public sealed class Row
{
    public string Prompt { get; set; } = "";
    public string Completion { get; set; } = "";
}

public sealed class Prediction
{
    public string GeneratedText { get; set; } = "";
    public float Score { get; set; }
    public float ScorePerToken { get; set; }
}
