using System.CommandLine;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Training;
using Spectre.Console;

namespace ML.Finetune.Samples.Cli;

/// <summary>The main job (no command) and `pretrain`: both write their --out through <see cref="OutputFolder"/>.</summary>
public static class MainJobCommand
{
    const string MainJobName = "main job", PretrainName = "pretrain", PretrainedFolder = "pretrained-model";

    internal static int MainJob(ParseResult a)
    {
        var output = Commands.Out(a);
        string factsPath = Commands.FactsPath(a);
        var facts = FactCorpus.Load(factsPath);
        facts.RequireSplit("train");
        facts.RequireSplit("test");
        string outDir = a.GetValue<string>("--out")!;
        long seed = a.GetValue<int>("--seed");
        var methods = CliDefinition.SplitList(a.GetValue<string>("--methods")!);
        string model = a.GetValue<string>("--model") ?? Commands.DefaultModelFolder;
        bool sweep = !a.GetValue<bool>("--no-sweep"), pretrain = Pretrainer.StoredFactsHash(model) != facts.Hash();
        var planned = ReportWriter.FileNames(methods, sweep).Concat(pretrain ? [PretrainedFolder] : []).ToList();
        using var folder = OutputFolder.Open(MainJobName, outDir, a.GetValue<bool>("--overwrite"), planned, ("--model", model), ("--facts", factsPath));
        var progress = ProgressReporter.For(output, a.GetValue<bool>("--no-progress"));
        string staging = folder.NewStaging();
        string? modelShown = null;
        if (pretrain)
        {
            string fresh = Path.Combine(staging, PretrainedFolder);
            modelShown = Path.Combine(outDir, PretrainedFolder);
            output.WriteLine($"facts differ from the model's ({model}); pretraining a fresh θ_p into {modelShown} …");
            var (m, el) = Pretrainer.Run(facts, new PretrainOptions { Seed = (int)seed }, fresh,
                p => progress.Step("pretraining θ_p", p.Record.Step + 1, p.TotalSteps, p.Record.CrossEntropy, p.Tokens), CliCancellation.Token);
            m.Dispose();
            progress.EndBar();
            output.WriteLine($"pretrained in {el.TotalSeconds:F0} s");
            model = fresh;
        }
        string infoPath = Path.Combine(model, Pretrainer.InfoFile);
        string? pretrainInfo = File.Exists(infoPath) ? File.ReadAllText(infoPath) : null;
        var options = new MainJobOptions
        {
            ModelFolder = model, Facts = facts, OutFolder = outDir, Methods = methods, Seed = seed,
            Steps = a.GetValue<int>("--steps"), SweepMethod = sweep ? methods[0] : null,
        };
        var result = Experiment.MainJob.Run(options, new Sink(progress), CliCancellation.Token);
        progress.EndBar();
        CliCancellation.Token.ThrowIfCancellationRequested();
        ReportWriter.Write(result, staging, pretrainInfo, modelShown);
        CliCancellation.Token.ThrowIfCancellationRequested();
        var files = folder.Commit();
        PrintTable(result, ConsoleFor(output));
        output.WriteLine($"wall time {result.Seconds:F0} s; wrote {string.Join(", ", files)} to {folder.FullPath}");
        return 0;
    }

    sealed class Sink(ProgressReporter progress) : IProgressSink
    {
        public void Step(string label, int done, int total, double loss, long tokens) => progress.Step(label, done, total, loss, tokens);
    }

    internal static int Pretrain(ParseResult a)
    {
        var output = Commands.Out(a);
        string factsPath = Commands.FactsPath(a);
        var facts = FactCorpus.Load(factsPath);
        var o = new PretrainOptions { Seed = a.GetValue<int>("--seed"), Steps = a.GetValue<int>("--steps") };
        using var folder = OutputFolder.Open(PretrainName, a.GetValue<string>("--out")!, a.GetValue<bool>("--overwrite"),
            ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", Pretrainer.InfoFile],
            ("--facts", factsPath));
        var progress = ProgressReporter.For(output, a.GetValue<bool>("--no-progress"));
        var (model, el) = Pretrainer.Run(facts, o, folder.NewStaging(),
            p => progress.Step(null, p.Record.Step + 1, p.TotalSteps, p.Record.CrossEntropy, p.Tokens), CliCancellation.Token);
        using (model)
        {
            progress.EndBar();
            CliCancellation.Token.ThrowIfCancellationRequested();
            folder.Commit();
            output.WriteLine($"pretrained {model.parameters().Sum(p => p.numel()):N0} parameters on {facts.Facts.Count} facts in {el.TotalSeconds:F0} s → {folder.FullPath}");
        }
        return 0;
    }

    /// <summary>A Spectre console writing to <paramref name="output"/> (the real terminal when it is the console).</summary>
    static IAnsiConsole ConsoleFor(TextWriter output) => ReferenceEquals(output, Console.Out)
        ? AnsiConsole.Console
        : AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors });

    /// <summary>Column headers short enough for an 80-column terminal; the legend under the table spells them out.</summary>
    public static readonly string[] TableHeaders = ["method", "init", "test", "train", "‖Δθ‖₂", "KL", "params", "s"];

    public static void PrintTable(MainJobResult r, IAnsiConsole console)
    {
        var t = new Table().Title("exact match after finetuning on train-split QA");
        foreach (var c in TableHeaders) t.AddColumn(new TableColumn(c).NoWrap());
        foreach (var x in r.Runs)
            t.AddRow(x.Method, x.Init, ReportWriter.Pct(x.TestAccuracy), ReportWriter.Pct(x.TrainAccuracy), ReportWriter.Num(x.DistanceFromStart),
                ReportWriter.Num(x.KlToPretrained, "F4"), x.TrainableParameters.ToString("N0", System.Globalization.CultureInfo.InvariantCulture), ReportWriter.Num(x.Seconds, "F1"));
        console.Write(t);
        console.WriteLine("test, train: exact match on the held-out and the train-split questions");
        console.WriteLine("‖Δθ‖₂: ‖θ−θ_start‖₂; KL: to θ_p on pretraining text (nats/token)");
        console.WriteLine("params: trainable parameters; s: wall seconds of the run");
    }
}
