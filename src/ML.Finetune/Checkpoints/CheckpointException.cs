namespace ML.Finetune.Checkpoints;

/// <summary>
/// A checkpoint file (safetensors, config.json, index) is malformed or does not match the model.
/// Messages always name the file and the tensor or field at fault.
/// Derives from <see cref="IOException"/> because <see cref="InvalidDataException"/> is sealed in .NET.
/// </summary>
public class CheckpointFormatException : IOException
{
    public CheckpointFormatException(string message) : base(message) { }
    public CheckpointFormatException(string message, Exception inner) : base(message, inner) { }

    /// <summary>The file the problem was found in, when known.</summary>
    public string? FilePath { get; init; }
}

/// <summary>The checkpoint is well formed but describes something we do not support (model type, pickle weights).</summary>
public class UnsupportedModelException : NotSupportedException
{
    public UnsupportedModelException(string message) : base(message) { }
    public UnsupportedModelException(string message, Exception inner) : base(message, inner) { }
}
