// Usage: ML.Finetune.DistributedProbe <outDir> <job>[;<job>…]   (alone, or under mpirun -np N)
//        ML.Finetune.DistributedProbe score <model.zip> <input.idv> <outDir>: mlContext.Model.Load, Transform (distributed
//        scoring under mpirun) and Evaluate; every rank writes score.rank<r>.json (every column, floats as bit patterns)
//        and metrics.rank<r>.json.
//   job = name:key=value,key=value,…  keys (defaults): model=llama|gpt2 (llama: tiny, GQA, no biases; gpt2: TinyTrainingRun),
//   method=full|lora|prompt|prefix (full), opt=sgd|adamw (adamw),
//   batch=4 (global), steps=4, n=16 examples, varlen=0|1 (prompt/completion lengths vary, so shards pad differently),
//   acc=1, l2=0, kl=0 (reference texts: 6), val=0 (validation examples, evaluated every step), patience=0, clip=0,
//   lr=0.01, dropout=0 (attention dropout for llama, residual for gpt2), ckpt=<folder> with every=N, sleep=ms per step, hang=R@S (rank R sleeps 10 min before step S),
//   fail=R@S (rank R throws before step S), timeout=T@S (collective time limit T seconds from step S on, so that a
//   slow start of a loaded machine cannot trip it).
// Writes <outDir>/<name>.rank<r>.safetensors (final trainable weights) and <name>.rank<r>.csv (history) on every rank,
// prints "RANK r OF n PID p" first, "STEP <name> <step>" on rank 0 after each step, "CHECKPOINT <name> <step>", "RESUMED <name> <step>".
using System.Globalization;
using Microsoft.ML;
using ML.Finetune;
using ML.Finetune.Adapters;
using ML.Finetune.Checkpoints;
using ML.Finetune.Distributed;
using ML.Finetune.Models;
using ML.Finetune.Tests.Shared;
using ML.Finetune.Training;
using TorchSharp;

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
torch.set_num_threads(1);
var comm = Communicator.World;
Console.WriteLine($"RANK {comm.Rank} OF {comm.Size} PID {Environment.ProcessId}");
Console.Out.Flush();
if (args[0] == "score") return Score(args[1], args[2], args[3]);
string outDir = args[0];
Directory.CreateDirectory(outDir);
try
{
    foreach (var spec in args[1].Split(';', StringSplitOptions.RemoveEmptyEntries)) RunJob(spec);
}
catch (InvalidOperationException e) // as the CLI does: a message and exit code 1 (which makes the rank abort the MPI job)
{
    Console.Error.WriteLine($"error: rank {comm.Rank}: {e.Message}");
    return 1;
}
return 0;

void RunJob(string spec)
{
    string name = spec.Split(':')[0];
    var o = (spec.Contains(':') ? spec[(spec.IndexOf(':') + 1)..] : "").Split(',', StringSplitOptions.RemoveEmptyEntries)
        .Select(kv => kv.Split('=')).ToDictionary(kv => kv[0], kv => kv[1]);
    string Get(string k, string d) => o.TryGetValue(k, out var v) ? v : d;
    int Int(string k, int d) => int.Parse(Get(k, d.ToString()));
    double Dbl(string k, double d) => double.Parse(Get(k, d.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
    (int Rank, int Step)? At(string k) => o.TryGetValue(k, out var v) ? (int.Parse(v.Split('@')[0]), int.Parse(v.Split('@')[1])) : null;

    double dropout = Dbl("dropout", 0);
    var config = Get("model", "llama") == "gpt2" ? TinyTrainingRun.Config with { ResidualDropout = dropout } : new CausalLMConfig
    {
        ModelType = "llama", VocabSize = 64, HiddenSize = 32, NumLayers = 2, NumHeads = 2, NumKeyValueHeads = 1, HeadDim = 16,
        IntermediateSize = 64, MaxPositionEmbeddings = 64, TieWordEmbeddings = true, AttentionDropout = dropout, EosTokenIds = [2], PadTokenId = 0,
    };
    using var model = CausalLMFactory.CreateRandom(config, 11, torch.ScalarType.Float32);
    IFinetuneMethod method = Get("method", "full") switch
    {
        "lora" => new LoraMethod(new LoraConfig { Rank = 4, Alpha = 8 }), // the architecture's PEFT default modules
        "prompt" => new PromptTuningMethod(new PromptTuningOptions { NumVirtualTokens = 3 }),
        "prefix" => new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 3 }),
        _ => new FullFinetuneMethod(),
    };
    torch.manual_seed(7);
    method.Attach(model, 7);
    bool varlen = Int("varlen", 0) == 1;
    var trainer = new FinetuneTrainer(new TrainerOptions
    {
        LearningRate = Dbl("lr", 0.01), Optimizer = Get("opt", "adamw") == "sgd" ? OptimizerKind.Sgd : OptimizerKind.AdamW,
        WeightDecay = 0.01, Momentum = Get("opt", "adamw") == "sgd" ? 0.9 : 0, BatchSize = Int("batch", 4), MaxSteps = Int("steps", 4), Seed = 5,
        Schedule = LearningRateScheduleKind.Cosine, WarmupSteps = 1, GradientAccumulationSteps = Int("acc", 1),
        L2Penalty = Dbl("l2", 0), KlPenalty = Dbl("kl", 0), GradientClipNorm = Dbl("clip", 0) is > 0 and var c ? c : null,
        EvaluateEveryNSteps = Int("val", 0) > 0 ? 1 : 0, EarlyStoppingPatience = Int("patience", 0),
        CheckpointFolder = o.GetValueOrDefault("ckpt"), CheckpointEveryNSteps = Int("every", 0),
    }, padId: 0);
    var hang = At("hang"); var fail = At("fail");
    int sleep = Int("sleep", 0), step = 0;
    trainer.CheckAlive = () =>
    {
        if (hang is { } h && h.Rank == comm.Rank && h.Step == step) Thread.Sleep(TimeSpan.FromMinutes(10));
        if (fail is { } f && f.Rank == comm.Rank && f.Step == step) throw new InvalidOperationException($"probe: rank {comm.Rank} fails before step {step} as asked");
        if (sleep > 0) Thread.Sleep(sleep);
    };
    var limit = At("timeout");
    trainer.Progress = p =>
    {
        step = p.Record.Step + 1;
        if (limit is { } l && l.Step == step) Communicator.CollectiveTimeout = TimeSpan.FromSeconds(l.Rank);
        if (comm.IsRoot) { Console.WriteLine($"STEP {name} {p.Record.Step}"); Console.Out.Flush(); }
    };
    trainer.CheckpointWritten = (step, _) => { Console.WriteLine($"CHECKPOINT {name} {step}"); Console.Out.Flush(); };
    trainer.Warning = m => Console.WriteLine("WARNING " + m);
    var history = trainer.Train(model, method, Examples(Int("n", 16), 1, varlen), Int("val", 0) > 0 ? Examples(Int("val", 0), 2, varlen) : null,
        Dbl("kl", 0) > 0 ? Examples(6, 3, true).Select(e => e.InputIds).ToList() : null);
    if (history.ResumedFromStep is int r) Console.WriteLine($"RESUMED {name} {r}");
    SafeTensors.Save(Path.Combine(outDir, $"{name}.rank{comm.Rank}.safetensors"), TinyTrainingRun.Weights(method));
    File.WriteAllText(Path.Combine(outDir, $"{name}.rank{comm.Rank}.csv"), history.ToCsv());
    (method as IDisposable)?.Dispose();
}

// n examples: prompt [1, a, b, …] → completion [(a + b) % 60 + 3, …, eos 2]; with varlen the prompt has 0–3 extra
// tokens and the completion 0–2 extra tokens, so batches pad to different lengths.
static List<EncodedExample> Examples(int n, int seed, bool varlen)
{
    if (!varlen) return TinyTrainingRun.Data(n, seed);
    var r = new Random(seed);
    var list = new List<EncodedExample>();
    for (int i = 0; i < n; i++)
    {
        long a = r.Next(3, 60), b = r.Next(3, 60);
        var prompt = new List<long> { 1, a, b };
        for (int k = r.Next(4); k > 0; k--) prompt.Add(r.Next(3, 60));
        var completion = new List<long> { (a + b) % 60 + 3 };
        for (int k = r.Next(3); k > 0; k--) completion.Add(r.Next(3, 60));
        completion.Add(2);
        list.Add(new EncodedExample(prompt.Concat(completion).ToArray(), Enumerable.Repeat(-100L, prompt.Count).Concat(completion).ToArray()));
    }
    return list;
}

int Score(string zip, string input, string dir)
{
    Directory.CreateDirectory(dir);
    var ml = new Microsoft.ML.MLContext(seed: 1);
    var model = ml.Model.Load(zip, out _);
    var scored = model.Transform(ml.Data.LoadFromBinary(input));
    File.WriteAllText(Path.Combine(dir, $"score.rank{comm.Rank}.json"), ML.Finetune.Testing.DataViewDump.ToJson(scored));
    var metrics = ml.Finetune().Evaluate(scored);
    File.WriteAllText(Path.Combine(dir, $"metrics.rank{comm.Rank}.json"), System.Text.Json.JsonSerializer.Serialize(metrics));
    (model as IDisposable)?.Dispose();
    return 0;
}
