return args.Length > 0 && args[0] == "research" ? ML.Finetune.Samples.ResearchCommand.Run(args) : ML.Finetune.Samples.InfoCommand.Run();
