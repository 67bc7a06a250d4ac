using System.Diagnostics;
using ML.Finetune.Models;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Tokenization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Spectre.Console;

namespace ML.Finetune.Samples.Cli;

/// <summary>The samples CLI: the main job (default), pretrain, finetune, generate, evaluate, info.</summary>
public static class Commands
{
    public static string DefaultModelFolder => Path.Combine(AppContext.BaseDirectory, "DefaultModel");
    public static string DefaultFacts => Path.Combine(AppContext.BaseDirectory, "Data", "universities.tsv");

    public const string Usage = """
        usage: ML.Finetune.Samples [command] [options]
          (no command)  the main job: θ_p vs θ_0 under every method
                        --facts <tsv> --methods <full,full+l2,full+kl,prompt,prefix,lora> --out <dir> --seed <n> --steps <n> --no-sweep --model <dir>
          pretrain      --out <dir> [--facts <tsv>] [--seed <n>] [--steps <n>]
          finetune      --model <dir> --data <file.jsonl|csv> --method full|lora --out <dir> [--steps <n>] [--lr <x>] [--seed <n>]
                        writes <out>/model.zip (ML.NET), <out>/hf/ (full) or <out>/adapter/ (PEFT, lora), <out>/history.csv
          generate      (--model <dir> [--adapter <peft dir>] | --zip <model.zip>) --prompt "<text>" [--max-tokens <n>]
          evaluate      --model <dir> [--facts <tsv>] [--split test|train]
          bench         forward/generation benchmark of a GPT-2-small-shaped model
          info          TorchSharp/libtorch versions and an autograd check
        """;

    /// <summary>Runs a command; usage errors → 2, data/model errors → 1. Nothing is written on failure.</summary>
    public static int Run(string[] args, TextWriter? err = null)
    {
        err ??= Console.Error;
        string cmd = args.Length > 0 && !args[0].StartsWith("--") ? args[0] : "";
        var rest = cmd == "" ? args : args[1..];
        try
        {
            return cmd switch
            {
                "" => MainJobCommand(new CliArgs(rest, ["--facts", "--methods", "--out", "--seed", "--steps", "--model"], ["--no-sweep", "--no-progress"])),
                "pretrain" => Pretrain(new CliArgs(rest, ["--facts", "--out", "--seed", "--steps"])),
                "finetune" => Finetune(new CliArgs(rest, ["--model", "--data", "--method", "--out", "--steps", "--lr", "--seed"])),
                "generate" => Generate(new CliArgs(rest, ["--model", "--prompt", "--max-tokens", "--adapter", "--zip"])),
                "evaluate" => Evaluate(new CliArgs(rest, ["--model", "--facts", "--split"])),
                "info" => InfoCommand.Run(),
                "research" => ResearchCommand.Run(rest),
                "bench" => Bench(rest),
                "help" or "--help" => Help(),
                _ => throw new CliException($"unknown command '{cmd}'"),
            };
        }
        catch (CliException e)
        {
            err.WriteLine($"error: {e.Message}");
            err.WriteLine(Usage);
            return 2;
        }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or DirectoryNotFoundException or ArgumentException
                                       or IOException or NotSupportedException)
        {
            err.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    static int Bench(string[] rest) { Benchmarks.ForwardGenerationBenchmark.Run(rest); return 0; }

    static int Help() { Console.WriteLine(Usage); return 0; }

    static FactCorpus Facts(CliArgs a) => FactCorpus.Load(a.Get("--facts") is string f ? (File.Exists(f) ? f : throw new CliException($"option '--facts': file not found: {f}")) : DefaultFacts);

    static int MainJobCommand(CliArgs a)
    {
        var facts = Facts(a);
        string outDir = a.Get("--out") ?? "mainjob-out";
        long seed = a.Int("--seed", 1, 0);
        var methods = (a.Get("--methods") ?? string.Join(",", FinetuneMethods.All.Select(m => m.Name))).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        foreach (var m in methods)
            if (FinetuneMethods.All.All(x => x.Name != m))
                throw new CliException($"option '--methods': unknown method '{m}' (available: {string.Join(", ", FinetuneMethods.All.Select(x => x.Name))})");
        string model = a.ExistingDir("--model", DefaultModelFolder);
        string? pretrainInfo = null;
        if (Pretrainer.StoredFactsHash(model) != facts.Hash())
        {
            string fresh = Path.Combine(outDir, "pretrained-model");
            Console.WriteLine($"facts differ from the model's ({model}); pretraining a fresh θ_p into {fresh} …");
            var (_, el) = RunWithProgress("pretraining θ_p", new PretrainOptions().Steps, a.Has("--no-progress"),
                p => Pretrainer.Run(facts, new PretrainOptions { Seed = (int)seed }, fresh, (s, _) => p.Advance(s + 1, "pretrain")));
            Console.WriteLine($"pretrained in {el.TotalSeconds:F0} s");
            model = fresh;
        }
        string infoPath = Path.Combine(model, Pretrainer.InfoFile);
        if (File.Exists(infoPath)) pretrainInfo = File.ReadAllText(infoPath);
        var options = new MainJobOptions
        {
            ModelFolder = model, Facts = facts, OutFolder = outDir, Methods = methods, Seed = seed,
            Steps = a.Int("--steps", 150), SweepMethod = a.Has("--no-sweep") ? null : methods[0],
        };
        var result = RunWithProgress("main job", 0, a.Has("--no-progress"), p => MainJob.Run(options, p));
        var files = ReportWriter.Write(result, outDir, pretrainInfo);
        PrintTable(result);
        Console.WriteLine($"wall time {result.Seconds:F0} s; wrote {string.Join(", ", files.Select(Path.GetFileName))} to {Path.GetFullPath(outDir)}");
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

    static int Pretrain(CliArgs a)
    {
        var facts = Facts(a);
        string outDir = a.Required("--out");
        var o = new PretrainOptions { Seed = a.Int("--seed", 1, 0), Steps = a.Int("--steps", new PretrainOptions().Steps) };
        var (model, el) = Pretrainer.Run(facts, o, outDir, (s, l) => { if ((s + 1) % 250 == 0) Console.WriteLine($"step {s + 1}/{o.Steps} loss {l:F3}"); });
        Console.WriteLine($"pretrained {model.parameters().Sum(p => p.numel()):N0} parameters on {facts.Facts.Count} facts in {el.TotalSeconds:F0} s → {Path.GetFullPath(outDir)}");
        model.Dispose();
        return 0;
    }

    public sealed class PromptCompletionRow { public string Prompt { get; set; } = ""; public string Completion { get; set; } = ""; }
    public sealed class PromptRow { public string Prompt { get; set; } = ""; }

    /// <summary>
    /// Finetunes with the library's ML.NET estimator and writes, into --out: model.zip (mlContext.Model.Save) and the
    /// finetuned weights as an HF folder. Everything is built in a sibling temp folder and moved at the end.
    /// </summary>
    static int Finetune(CliArgs a)
    {
        string model = a.ExistingDir("--model");
        string data = a.ExistingFile("--data");
        string method = a.Required("--method");
        string outDir = a.Required("--out");
        if (method is "prompt" or "prefix")
            throw new CliException($"method '{method}' is not available yet: its estimator has not landed in the library (available: full, lora)");
        if (method is not ("full" or "lora")) throw new CliException($"option '--method' must be one of lora, prompt, prefix, full; got '{method}'");
        int steps = a.Int("--steps", 150), seed = a.Int("--seed", 1, 0);
        double lr = a.Double("--lr", method == "lora" ? 3e-3 : 3e-4);
        var pairs = PromptCompletionFile.Load(data);
        var config = CausalLMConfig.Load(model);
        var ml = new Microsoft.ML.MLContext(seed);
        var dv = ml.Data.LoadFromEnumerable(pairs.Select(p => new PromptCompletionRow { Prompt = p.Prompt, Completion = p.Completion }));
        var sw = Stopwatch.StartNew();
        T Fill<T>(T o) where T : Estimators.FinetuneOptions
        {
            o.BaseModelPath = Path.GetFullPath(model); o.MaxSteps = steps; o.LearningRate = lr; o.BatchSize = 16; o.WarmupSteps = Math.Max(1, steps / 10);
            o.Schedule = Training.LearningRateScheduleKind.Cosine; o.Seed = seed; o.NumberOfThreads = 1;
            o.MaxSequenceLength = config.MaxPositionEmbeddings; o.Generation = new Estimators.FinetuneGenerationOptions { MaxNewTokens = 8 };
            return o;
        }
        using var transformer = method == "lora"
            ? ml.Transforms.LoraFinetune(Fill(new Estimators.LoraFinetuneOptions { Rank = 8, Alpha = 16 })).Fit(dv)
            : ml.Transforms.Finetune(Fill(new Estimators.FullFinetuneOptions())).Fit(dv);
        string full = Path.GetFullPath(outDir);
        string tmp = full.TrimEnd(Path.DirectorySeparatorChar) + $".tmp-{Guid.NewGuid():N}";
        try
        {
            Directory.CreateDirectory(tmp);
            ml.Model.Save(transformer, dv.Schema, Path.Combine(tmp, "model.zip"));
            if (method == "lora") Adapters.PeftLoraIO.Export(transformer, Path.Combine(tmp, "adapter"));
            else
            {
                CausalLMFactory.SavePretrained(transformer.Model, Path.Combine(tmp, "hf"));
                foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", Pretrainer.InfoFile })
                    if (File.Exists(Path.Combine(model, f))) File.Copy(Path.Combine(model, f), Path.Combine(tmp, "hf", f));
            }
            transformer.TrainingHistory.WriteCsv(Path.Combine(tmp, "history.csv"));
            if (Directory.Exists(full)) Directory.Delete(full, true);
            Directory.Move(tmp, full);
        }
        finally { if (Directory.Exists(tmp)) Directory.Delete(tmp, true); }
        var last = transformer.TrainingHistory.Records[^1];
        Console.WriteLine($"finetuned ({method}) on {pairs.Count} examples, {transformer.TrainingHistory.Records.Count} steps, final CE {last.CrossEntropy:F3}, " +
                          $"‖θ−θ_p‖₂ {last.Distance:F3}, {sw.Elapsed.TotalSeconds:F0} s → {full}/model.zip, {full}/{(method == "lora" ? "adapter" : "hf")}/");
        return 0;
    }

    static int Generate(CliArgs a)
    {
        string prompt = a.Required("--prompt");
        int maxTokens = a.Int("--max-tokens", 16);
        if (a.Get("--zip") is string zip)
        {
            if (!File.Exists(zip)) throw new CliException($"option '--zip': file not found: {zip}");
            var ml = new Microsoft.ML.MLContext(0);
            var t = ml.Model.Load(zip, out _);
            try
            {
                var outView = t.Transform(ml.Data.LoadFromEnumerable(new[] { new PromptRow { Prompt = prompt } }));
                Console.WriteLine(outView.GetColumn<string>("GeneratedText").First().Trim());
            }
            finally { (t as IDisposable)?.Dispose(); }
            return 0;
        }
        string model = a.ExistingDir("--model");
        var text = new LmText(CausalLMTokenizer.FromFolder(model));
        using var m = CausalLMFactory.LoadPretrained(model);
        if (a.Get("--adapter") is string adapter)
        {
            if (!Directory.Exists(adapter)) throw new CliException($"option '--adapter': folder not found: {adapter}");
            Adapters.PeftLoraIO.Import(m, adapter);
        }
        Console.WriteLine(text.Generate(m, prompt, maxTokens));
        return 0;
    }

    static int Evaluate(CliArgs a)
    {
        string model = a.ExistingDir("--model");
        var facts = Facts(a);
        string split = a.Get("--split") ?? "test";
        if (split is not ("train" or "test")) throw new CliException($"option '--split' must be train or test, got '{split}'");
        var text = new LmText(CausalLMTokenizer.FromFolder(model));
        using var m = CausalLMFactory.LoadPretrained(model);
        var (acc, rows) = Evaluator.ExactMatch(m, text, QaBuilder.Build(facts, split));
        foreach (var (p, got, ok) in rows) Console.WriteLine($"{(ok ? "✓" : "✗")} {p.Prompt} {got}" + (ok ? "" : $"   (expected {p.Answer})"));
        Console.WriteLine($"{split} exact match: {ReportWriter.Pct(acc)} ({rows.Count(r => r.Ok)}/{rows.Count})");
        return 0;
    }
}
