using System.Diagnostics;
using ML.Finetune.Models;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Tokenization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Spectre.Console;
using System.CommandLine;

namespace ML.Finetune.Samples.Cli;

/// <summary>The samples CLI: the main job (default), pretrain, finetune, generate, evaluate, info.</summary>
public static class Commands
{
    public static string DefaultModelFolder => Path.Combine(AppContext.BaseDirectory, "DefaultModel");
    public static string DefaultFacts => Path.Combine(AppContext.BaseDirectory, "Data", "universities.tsv");

    /// <summary>Runs a command; usage errors → 2, data/model errors → 1. Nothing is written on failure.</summary>
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
        catch (CliException e)
        {
            err.WriteLine($"error: {e.Message}");
            err.WriteLine(Hint(parsed));
            return 2;
        }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or DirectoryNotFoundException or ArgumentException
                                       or IOException or NotSupportedException or InvalidOperationException)
        {
            err.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    static TextWriter Out(ParseResult a) => a.InvocationConfiguration.Output;

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

    static FactCorpus Facts(ParseResult a) => FactCorpus.Load(a.GetValue<string>("--facts") ?? DefaultFacts);

    internal static int MainJob(ParseResult a)
    {
        var facts = Facts(a);
        string outDir = a.GetValue<string>("--out")!;
        long seed = a.GetValue<int>("--seed");
        var methods = CliDefinition.SplitList(a.GetValue<string>("--methods")!);
        string model = a.GetValue<string>("--model") ?? DefaultModelFolder;
        bool noProgress = a.GetValue<bool>("--no-progress");
        string? pretrainInfo = null;
        if (Pretrainer.StoredFactsHash(model) != facts.Hash())
        {
            string fresh = Path.Combine(outDir, "pretrained-model");
            Out(a).WriteLine($"facts differ from the model's ({model}); pretraining a fresh θ_p into {fresh} …");
            var (_, el) = RunWithProgress("pretraining θ_p", new PretrainOptions().Steps, noProgress,
                p => Pretrainer.Run(facts, new PretrainOptions { Seed = (int)seed }, fresh, (s, _) => p.Advance(s + 1, "pretrain")));
            Out(a).WriteLine($"pretrained in {el.TotalSeconds:F0} s");
            model = fresh;
        }
        string infoPath = Path.Combine(model, Pretrainer.InfoFile);
        if (File.Exists(infoPath)) pretrainInfo = File.ReadAllText(infoPath);
        var options = new MainJobOptions
        {
            ModelFolder = model, Facts = facts, OutFolder = outDir, Methods = methods, Seed = seed,
            Steps = a.GetValue<int>("--steps"), SweepMethod = a.GetValue<bool>("--no-sweep") ? null : methods[0],
        };
        var result = RunWithProgress("main job", 0, noProgress, p => Experiment.MainJob.Run(options, p));
        var files = ReportWriter.Write(result, outDir, pretrainInfo);
        PrintTable(result);
        Out(a).WriteLine($"wall time {result.Seconds:F0} s; wrote {string.Join(", ", files.Select(Path.GetFileName))} to {Path.GetFullPath(outDir)}");
        return 0;
    }

    static void PrintTable(MainJobResult r)
    {
        var t = new Table().Title("held-out exact match after finetuning on train-split QA");
        foreach (var c in new[] { "method", "init", "held-out acc", "train acc", "‖θ−θ_start‖₂", "KL to θ_p", "trainable", "wall s" }) t.AddColumn(c);
        foreach (var x in r.Runs)
            t.AddRow(x.Method, x.Init, ReportWriter.Pct(x.TestAccuracy), ReportWriter.Pct(x.TrainAccuracy), ReportWriter.Num(x.DistanceFromStart),
                ReportWriter.Num(x.KlToPretrained, "F4"), x.TrainableParameters.ToString("N0"), ReportWriter.Num(x.Seconds, "F1"));
        AnsiConsole.Write(t);
    }

    sealed class SpectreSink(ProgressContext ctx, string title) : IProgressSink
    {
        ProgressTask? _task;
        public void Start(int total) => _task = ctx.AddTask(Markup.Escape(title), maxValue: Math.Max(1, total));
        public void Advance(int value, string label)
        {
            if (_task == null) return;
            _task.Value = value;
            _task.Description = Markup.Escape($"{title}: {label}");
        }
        public void Stop() { if (_task != null) _task.Value = _task.MaxValue; }
    }

    sealed class NullSink : IProgressSink
    {
        public void Start(int total) { }
        public void Advance(int value, string label) { }
        public void Stop() { }
    }

    static T RunWithProgress<T>(string title, int total, bool disabled, Func<IProgressSink, T> work)
    {
        if (disabled || !AnsiConsole.Profile.Capabilities.Interactive) return work(new NullSink());
        return AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var sink = new SpectreSink(ctx, title);
                if (total > 0) sink.Start(total);
                return work(sink);
            });
    }

    internal static int Pretrain(ParseResult a)
    {
        var facts = Facts(a);
        string outDir = a.GetValue<string>("--out")!;
        var o = new PretrainOptions { Seed = a.GetValue<int>("--seed"), Steps = a.GetValue<int>("--steps") };
        var (model, el) = Pretrainer.Run(facts, o, outDir, (s, l) => { if ((s + 1) % 250 == 0) Out(a).WriteLine($"step {s + 1}/{o.Steps} loss {l:F3}"); });
        Out(a).WriteLine($"pretrained {model.parameters().Sum(p => p.numel()):N0} parameters on {facts.Facts.Count} facts in {el.TotalSeconds:F0} s → {Path.GetFullPath(outDir)}");
        model.Dispose();
        return 0;
    }

    public sealed class PromptCompletionRow { public string Prompt { get; set; } = ""; public string Completion { get; set; } = ""; }
    public sealed class PromptRow { public string Prompt { get; set; } = ""; }

    /// <summary>
    /// Finetunes with the library's ML.NET estimator and writes, into --out: model.zip (mlContext.Model.Save), history.csv and
    /// the finetuned weights as an HF folder (full) or a PEFT adapter folder (lora, prompt, prefix). Everything is built in a
    /// sibling temp folder and moved at the end, so a failure leaves --out untouched.
    /// </summary>
    internal static int Finetune(ParseResult a)
    {
        string model = a.GetValue<string>("--model")!;
        string data = a.GetValue<string>("--data")!;
        string method = a.GetValue<string>("--method")!;
        string outDir = a.GetValue<string>("--out")!;
        int steps = a.GetValue<int>("--steps"), seed = a.GetValue<int>("--seed");
        int rank = a.GetValue<int>("--rank"), virtualTokens = a.GetValue<int>("--virtual-tokens");
        bool projection = a.GetValue<bool>("--projection");
        if (projection && method != "prefix") throw new CliException("option '--projection' applies to --method prefix only");
        if (a.GetResult("--virtual-tokens") is System.CommandLine.Parsing.OptionResult { Implicit: false }
            && method is not ("prompt" or "prefix"))
            throw new CliException("option '--virtual-tokens' applies to --method prompt or prefix only");
        double lr = a.GetValue<double?>("--lr") ?? method switch { "lora" => 3e-3, "prompt" => 3e-2, "prefix" => 1e-2, _ => 3e-4 };
        var pairs = PromptCompletionFile.Load(data);
        var config = CausalLMConfig.Load(model);
        var ml = new MLContext(seed);
        var dv = ml.Data.LoadFromEnumerable(pairs.Select(p => new PromptCompletionRow { Prompt = p.Prompt, Completion = p.Completion }));
        var sw = Stopwatch.StartNew();
        T Fill<T>(T o) where T : Estimators.FinetuneOptions
        {
            o.BaseModelPath = Path.GetFullPath(model); o.MaxSteps = steps; o.LearningRate = lr; o.BatchSize = 16; o.WarmupSteps = Math.Max(1, steps / 10);
            o.Schedule = Training.LearningRateScheduleKind.Cosine; o.Seed = seed; o.NumberOfThreads = 1;
            o.MaxSequenceLength = config.MaxPositionEmbeddings; o.Generation = new Estimators.FinetuneGenerationOptions { MaxNewTokens = 8 };
            return o;
        }
        using var transformer = method switch
        {
            "lora" => ml.Transforms.LoraFinetune(Fill(new Estimators.LoraFinetuneOptions { Rank = rank, Alpha = 2 * rank })).Fit(dv),
            "prompt" => ml.Transforms.PromptTune(Fill(new Estimators.PromptTuneOptions { NumVirtualTokens = virtualTokens })).Fit(dv),
            "prefix" => ml.Transforms.PrefixTune(Fill(new Estimators.PrefixTuneOptions { NumVirtualTokens = virtualTokens, PrefixProjection = projection })).Fit(dv),
            _ => ml.Transforms.Finetune(Fill(new Estimators.FullFinetuneOptions())).Fit(dv),
        };
        string weights = method == "full" ? "hf" : "adapter";
        string full = OutputFolder.Write(outDir, tmp =>
        {
            ml.Model.Save(transformer, dv.Schema, Path.Combine(tmp, "model.zip"));
            switch (method)
            {
                case "lora": Adapters.PeftLoraIO.Export(transformer, Path.Combine(tmp, weights)); break;
                case "prompt" or "prefix":
                    Adapters.PeftPromptLearning.Save(transformer.Method, transformer.Model, Path.Combine(tmp, weights), Path.GetFullPath(model));
                    break;
                default:
                    CausalLMFactory.SavePretrained(transformer.Model, Path.Combine(tmp, weights));
                    foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", Pretrainer.InfoFile })
                        if (File.Exists(Path.Combine(model, f))) File.Copy(Path.Combine(model, f), Path.Combine(tmp, weights, f));
                    break;
            }
            transformer.TrainingHistory.WriteCsv(Path.Combine(tmp, "history.csv"));
        });
        var last = transformer.TrainingHistory.Records[^1];
        Out(a).WriteLine($"finetuned ({method}) on {pairs.Count} examples, {transformer.TrainingHistory.Records.Count} steps, final CE {last.CrossEntropy:F3}, " +
                          $"‖θ−θ_p‖₂ {last.Distance:F3}, {sw.Elapsed.TotalSeconds:F0} s → {full}/model.zip, {full}/{weights}/");
        return 0;
    }

    internal static int Generate(ParseResult a)
    {
        string prompt = a.GetValue<string>("--prompt")!;
        int maxTokens = a.GetValue<int>("--max-tokens");
        string? zip = a.GetValue<string>("--zip"), model = a.GetValue<string>("--model"), adapter = a.GetValue<string>("--adapter");
        if ((zip == null) == (model == null)) throw new CliException("give either --model <dir> or --zip <model.zip>");
        if (zip != null && adapter != null) throw new CliException("option '--adapter' applies to --model only (a model.zip holds its finetuning)");
        if (zip != null)
        {
            var ml = new MLContext(0);
            var t = ml.Model.Load(zip, out _);
            try
            {
                var outView = t.Transform(ml.Data.LoadFromEnumerable(new[] { new PromptRow { Prompt = prompt } }));
                Out(a).WriteLine(outView.GetColumn<string>("GeneratedText").First().Trim());
            }
            finally { (t as IDisposable)?.Dispose(); }
            return 0;
        }
        var text = new LmText(CausalLMTokenizer.FromFolder(model!));
        using var m = CausalLMFactory.LoadPretrained(model!);
        if (adapter == null)
        {
            Out(a).WriteLine(text.Generate(m, null, prompt, maxTokens));
            return 0;
        }
        if (PeftType(adapter) == "LORA")
        {
            Adapters.PeftLoraIO.Import(m, adapter);
            Out(a).WriteLine(text.Generate(m, null, prompt, maxTokens));
            return 0;
        }
        // Prompt/prefix tuning act outside model.Forward: the generator takes their soft prompt / KV prefix.
        var method = Adapters.PeftPromptLearning.Load(adapter, m);
        try { Out(a).WriteLine(text.Generate(m, method, prompt, maxTokens)); }
        finally { (method as IDisposable)?.Dispose(); }
        return 0;
    }

    static string PeftType(string adapter)
    {
        string cfg = Path.Combine(adapter, "adapter_config.json");
        if (!File.Exists(cfg)) throw new FileNotFoundException($"{cfg} not found: '--adapter' must be a PEFT adapter folder");
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(cfg));
            return doc.RootElement.TryGetProperty("peft_type", out var t) && t.ValueKind == System.Text.Json.JsonValueKind.String
                ? t.GetString()! : throw new InvalidDataException($"{cfg}: field 'peft_type' is missing");
        }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"{cfg}: not valid JSON ({e.Message})"); }
    }

    internal static int Evaluate(ParseResult a)
    {
        string? model = a.GetValue<string>("--model"), zip = a.GetValue<string>("--zip"), data = a.GetValue<string>("--data");
        if (data != null || zip != null)
        {
            if (zip == null || data == null) throw new CliException("--zip <model.zip> and --data <file> go together (prompt/completion evaluation)");
            if (model != null) throw new CliException("give either --model (facts QA) or --zip with --data, not both");
            return EvaluateData(a, zip, data);
        }
        if (model == null) throw new CliException("give --model <dir> (facts QA) or --zip <model.zip> --data <file>");
        var facts = Facts(a);
        string split = a.GetValue<string>("--split")!;
        var text = new LmText(CausalLMTokenizer.FromFolder(model));
        using var m = CausalLMFactory.LoadPretrained(model);
        var (acc, rows) = Evaluator.ExactMatch(m, text, QaBuilder.Build(facts, split));
        foreach (var (p, got, ok) in rows) Out(a).WriteLine($"{(ok ? "✓" : "✗")} {p.Prompt} {got}" + (ok ? "" : $"   (expected {p.Answer})"));
        Out(a).WriteLine($"{split} exact match: {ReportWriter.Pct(acc)} ({rows.Count(r => r.Ok)}/{rows.Count})");
        return 0;
    }

    /// <summary>Exact match, mean NLL and perplexity of a model.zip on prompt/completion pairs (mlContext.Finetune().Evaluate).</summary>
    static int EvaluateData(ParseResult a, string zip, string data)
    {
        var pairs = PromptCompletionFile.Load(data);
        if (pairs.Count == 0) throw new InvalidDataException($"{data}: no prompt/completion pairs");
        var ml = new MLContext(0);
        var t = ml.Model.Load(zip, out _);
        try
        {
            var scored = t.Transform(ml.Data.LoadFromEnumerable(pairs.Select(p => new PromptCompletionRow { Prompt = p.Prompt, Completion = p.Completion })));
            var metrics = ml.Finetune().Evaluate(scored);
            Out(a).WriteLine($"{metrics.RowCount} rows of {data}: exact match {ReportWriter.Pct(metrics.ExactMatchAccuracy)}, " +
                              $"mean NLL {metrics.MeanNll:F4}, perplexity {metrics.Perplexity:F3}");
        }
        finally { (t as IDisposable)?.Dispose(); }
        return 0;
    }
}
