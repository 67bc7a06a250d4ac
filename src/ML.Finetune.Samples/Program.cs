// Small models on a contended CPU: one intra-op thread is several times faster than libtorch's default here.
TorchSharp.torch.set_num_threads(int.TryParse(Environment.GetEnvironmentVariable("MLFT_THREADS"), out int threads) && threads > 0 ? threads : 1);
ML.Finetune.Samples.Cli.CliCancellation.Install(Console.Error);
// Under mpirun every rank runs the command (training is data-parallel); rank 0 alone prints and writes outputs.
try { if (!ML.Finetune.Distributed.Communicator.World.IsRoot) Console.SetOut(TextWriter.Null); }
catch (InvalidOperationException e) { Console.Error.WriteLine($"error: {e.Message}"); return 1; }
return ML.Finetune.Samples.Cli.Commands.Run(args);
