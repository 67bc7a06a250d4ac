using System.Reflection;
using ML.Finetune.Training;

namespace ML.Finetune.Samples.Cli;

/// <summary>A usage error found after parsing (a rule between options, an --out that may not be used): exit code 2.</summary>
public sealed class CliException(string message) : Exception(message);

/// <summary>Turns any exception into the one-line message and exit code the CLI prints.</summary>
public static class CliErrors
{
    /// <summary>The exception behind reflection and task wrappers (ML.NET's loader calls ours through reflection).</summary>
    public static Exception Root(Exception e)
    {
        while (e is TargetInvocationException or AggregateException or TypeInitializationException && e.InnerException != null) e = e.InnerException!;
        return e;
    }

    /// <summary>A message without what follows its first line break (libtorch appends C++ frames after "Exception raised from").</summary>
    public static string Clean(string message)
    {
        int cut = message.IndexOfAny(['\r', '\n']);
        return (cut >= 0 ? message[..cut] : message).Trim();
    }

    /// <summary>(message, exit code): 2 bad arguments, 130 interrupted, 1 everything else.</summary>
    public static (string Message, int Code) Describe(Exception e, string command)
    {
        var root = Root(e);
        return root switch
        {
            CliException => (root.Message, 2),
            OperationCanceledException => ($"interrupted ({command})", CliCancellation.ExitCode),
            FinetuneDivergedException or InvalidDataException or FileNotFoundException or DirectoryNotFoundException or ArgumentException
                or IOException or NotSupportedException or InvalidOperationException or FormatException or UnauthorizedAccessException
                => (Clean(root.Message), 1),
            OutOfMemoryException => ($"out of memory in '{command}': use a smaller model, batch or --max-length", 1),
            _ => ($"{Clean(root.Message)} (unexpected {root.GetType().Name} in '{command}'; MLFT_DEBUG=1 prints its stack trace)", 1),
        };
    }
}
