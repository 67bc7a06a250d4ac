return ML.Finetune.Samples.InfoCommand.Run();
