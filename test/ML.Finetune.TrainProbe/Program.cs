// Usage: ML.Finetune.TrainProbe <checkpointFolder|-> <out.safetensors> <steps> <checkpointEvery> [pauseAfterCheckpoint] [fp32|bf16]
// Trains TinyTrainingRun (resuming from the folder's newest checkpoint when there is one), prints "CHECKPOINT n" after
// each checkpoint and "RESUMED n" when it resumed; with pauseAfterCheckpoint = k it sleeps after its k-th checkpoint
// so that a test can kill it there. Writes the final trainable weights to out.safetensors.
using ML.Finetune.Checkpoints;
using ML.Finetune.Tests.Shared;
using ML.Finetune.Training;
using TorchSharp;

string folder = args[0], output = args[1];
int steps = int.Parse(args[2]), every = int.Parse(args[3]);
int pauseAfter = args.Length > 4 ? int.Parse(args[4]) : -1;
var dtype = args.Length > 5 && args[5] == "bf16" ? torch.ScalarType.BFloat16 : torch.ScalarType.Float32;
torch.set_num_threads(1); // a separate process: no other test can change torch's process-wide thread count mid-run
var (model, method) = TinyTrainingRun.Create(dtype: dtype);
var trainer = new FinetuneTrainer(new TrainerOptions
{
    LearningRate = 3e-3, BatchSize = 4, MaxSteps = steps, Seed = 5, Schedule = LearningRateScheduleKind.Cosine, WarmupSteps = 2,
    CheckpointFolder = folder == "-" ? null : folder, CheckpointEveryNSteps = folder == "-" ? 0 : every,
}, padId: 0);
int written = 0;
trainer.CheckpointWritten = (step, dir) =>
{
    Console.WriteLine($"CHECKPOINT {step}");
    Console.Out.Flush();
    if (++written == pauseAfter) Thread.Sleep(TimeSpan.FromMinutes(2)); // the test kills us here
};
trainer.Warning = m => Console.WriteLine("WARNING " + m);
var history = trainer.Train(model, method, TinyTrainingRun.Data(40, 1));
if (history.ResumedFromStep is int r) Console.WriteLine($"RESUMED {r}");
SafeTensors.Save(output, TinyTrainingRun.Weights(method));
Console.WriteLine("DONE");
return 0;
