using System.CommandLine;
using ML.Finetune.Samples.Experiment;

namespace ML.Finetune.Samples.Cli;

/// <summary>
/// The samples CLI: the main job (default), pretrain, finetune, generate, evaluate, sweep, bench, info. Exit codes: 0 done,
/// 1 a data/model/run failure, 2 bad arguments, 130 interrupted (Ctrl-C, SIGTERM). Every failure prints one
/// <c>error: &lt;what&gt;, &lt;where&gt;</c> line (two with a hint), never a stack trace (MLFT_DEBUG=1 adds it).
/// </summary>
public static class Commands
{
    public static string DefaultModelFolder => Path.Combine(AppContext.BaseDirectory, "DefaultModel");
    public static string DefaultFacts => Path.Combine(AppContext.BaseDirectory, "Data", "universities.tsv");

    public static int Run(string[] args, TextWriter? err = null, TextWriter? output = null)
    {
        err ??= Console.Error;
        var root = CliDefinition.Build();
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var e in parsed.Errors) err.WriteLine($"error: {e.Message}");
            err.WriteLine(Hint(parsed));
            return 2;
        }
        try
        {
            return parsed.Invoke(new InvocationConfiguration { Output = output ?? Console.Out, Error = err, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e)
        {
            var (message, code) = CliErrors.Describe(e, CommandName(parsed));
            err.WriteLine($"{(code == CliCancellation.ExitCode ? "" : "error: ")}{message}");
            if (code == 2) err.WriteLine(Hint(parsed));
            if (Environment.GetEnvironmentVariable("MLFT_DEBUG") == "1") err.WriteLine(e);
            return code;
        }
    }

    internal static TextWriter Out(ParseResult a) => a.InvocationConfiguration.Output;
    internal static TextWriter Err(ParseResult a) => a.InvocationConfiguration.Error;

    static string CommandName(ParseResult r) => r.CommandResult.Command is RootCommand ? "main job" : r.CommandResult.Command.Name;

    static string Hint(ParseResult r)
    {
        var names = new List<string> { CliDefinition.Name };
        if (r.CommandResult.Command is not RootCommand) names.Add(r.CommandResult.Command.Name);
        return $"see '{string.Join(' ', names)} --help'";
    }

    internal static int Bench(ParseResult a)
    {
        Benchmarks.ForwardGenerationBenchmark.Run(a.GetValue<int>("--new-tokens"), a.GetValue<int>("--prompt-length"), a.GetValue<int>("--batch"));
        return 0;
    }

    internal static string FactsPath(ParseResult a) => a.GetValue<string>("--facts") ?? DefaultFacts;

    internal static FactCorpus Facts(ParseResult a) => FactCorpus.Load(FactsPath(a));

    /// <summary>A warning on standard error (never mixed into a command's results on standard output).</summary>
    internal static void Warn(ParseResult a, string message) => Err(a).WriteLine($"warning: {message}");

    public sealed class PromptCompletionRow { public string Prompt { get; set; } = ""; public string Completion { get; set; } = ""; }
    /// <summary>A conversation as JSON text (the estimator's Messages column).</summary>
    public sealed class MessagesRow { public string Messages { get; set; } = ""; }
    public sealed class TextRow { public string Text { get; set; } = ""; }
}
