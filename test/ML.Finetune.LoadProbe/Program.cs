// Usage: LoadProbe <model.zip> <input.idv> <output.json>
// Loads the model with mlContext.Model.Load, transforms the binary IDataView and dumps every column bit-exactly.
using Microsoft.ML;

if (args.Length != 3) { Console.Error.WriteLine("usage: LoadProbe <model.zip> <input.idv> <output.json>"); return 2; }
var ml = new MLContext(seed: 1);
var model = ml.Model.Load(args[0], out _);
var input = ml.Data.LoadFromBinary(args[1]);
File.WriteAllText(args[2], ML.Finetune.Testing.DataViewDump.ToJson(model.Transform(input)));
return 0;
