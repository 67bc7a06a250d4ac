namespace ML.Finetune.Training;

/// <summary>Re-creates a method from the name and config JSON stored with a saved model (add a case per method).</summary>
public static class FinetuneMethodFactory
{
    public static IFinetuneMethod Create(string name, string configJson) => name switch
    {
        FullFinetuneMethod.MethodName => new FullFinetuneMethod(),
        "lora" => new ML.Finetune.Adapters.LoraMethod(ML.Finetune.Adapters.LoraMethod.ConfigFromStateJson(configJson)),
        Adapters.PromptTuningMethod.MethodName => new Adapters.PromptTuningMethod(Adapters.PromptTuningMethod.OptionsFromJson(configJson)),
        Adapters.PrefixTuningMethod.MethodName => new Adapters.PrefixTuningMethod(Adapters.PrefixTuningMethod.OptionsFromJson(configJson)),
        _ => throw new InvalidDataException($"The saved model uses finetuning method '{name}', which this version of ML.Finetune does not know."),
    };
}
