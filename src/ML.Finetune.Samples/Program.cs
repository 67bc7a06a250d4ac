// Small models on a contended CPU: one intra-op thread is several times faster than libtorch's default here.
TorchSharp.torch.set_num_threads(int.TryParse(Environment.GetEnvironmentVariable("MLFT_THREADS"), out int threads) && threads > 0 ? threads : 1);
ML.Finetune.Samples.Cli.CliCancellation.Install(Console.Error);
return ML.Finetune.Samples.Cli.Commands.Run(args);
