using System.CommandLine;
using System.Globalization;
using System.Text;
using Microsoft.ML;
using ML.Finetune.Evaluation;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Training;

namespace ML.Finetune.Samples.Cli;

/// <summary>`generate` and `evaluate`: both load an HF folder (+ PEFT adapter) or a finetune model.zip through <see cref="LoadedModel"/>.</summary>
public static class GenerateEvaluateCommands
{
    public static Command BuildGenerate()
    {
        var cmd = new Command("generate",
            "greedy continuation of a prompt. Prompt + virtual tokens + new tokens must fit the model's context: a longer prompt is cut from the left " +
            "(with a warning), the same way for --model and --zip")
        {
            CliDefinition.DirOption("--model", false, "HF model folder"),
            CliDefinition.DirOption("--adapter", false, "PEFT adapter folder (LoRA, prompt or prefix tuning) for --model"),
            CliDefinition.FileOption("--zip", "ML.NET model.zip written by finetune (instead of --model)"),
            BaseModelOption(),
            new Option<string>("--prompt") { Description = "prompt text", Required = true, HelpName = "text" },
            CliDefinition.IntOption("--max-tokens", 16, 1, "maximum new tokens"),
        };
        cmd.SetAction(Generate);
        return cmd;
    }

    public static Command BuildEvaluate()
    {
        var cmd = new Command("evaluate",
            "exact match on the facts' QA split (--model [--adapter]), or exact match, mean NLL and perplexity of a model.zip on prompt/completion pairs (--zip with --data)")
        {
            CliDefinition.DirOption("--model", false, "HF model folder (facts QA)"),
            CliDefinition.DirOption("--adapter", false, "PEFT adapter folder (LoRA, prompt or prefix tuning) for --model"),
            CliDefinition.FileOption("--facts", "facts TSV (columns university, city, state, split); default: Data/universities.tsv"),
            CliDefinition.ChoiceOption("--split", ["test", "train"], required: false, "QA split", "test"),
            CliDefinition.FileOption("--zip", "ML.NET model.zip written by finetune (with --data)"),
            BaseModelOption(),
            CliDefinition.FileOption("--data", CliDefinition.DataHelp),
            new Option<string>("--predictions")
            {
                Description = "with --zip/--data: write one CSV row per example (prompt, expected, generated, exact_match, nll = mean negative " +
                              "log-likelihood per completion token incl. eos)", HelpName = "file.csv",
            },
            CliDefinition.OverwriteOption("replace an existing --predictions file"),
        };
        cmd.SetAction(Evaluate);
        return cmd;
    }

    static Option<string> BaseModelOption()
    {
        var o = CliDefinition.DirOption("--base-model", false,
            "with --zip: the folder the base model moved to (LoRA/prompt/prefix zips reference their base); or set MLFINETUNE_BASE_MODEL_DIR");
        return o;
    }

    static LoadedModel Load(ParseResult a, string? model, string? adapter, string? zip)
    {
        string? baseModel = a.GetValue<string>("--base-model");
        if (zip != null && adapter != null) throw new CliException("option '--adapter' applies to --model only (a model.zip holds its finetuning)");
        if (zip == null && baseModel != null) throw new CliException("option '--base-model' applies to --zip only");
        return zip != null ? LoadedModel.FromZip(new MLContext(0), zip, baseModel) : LoadedModel.FromFolder(model!, adapter);
    }

    static int Generate(ParseResult a)
    {
        string? zip = a.GetValue<string>("--zip"), model = a.GetValue<string>("--model"), adapter = a.GetValue<string>("--adapter");
        if ((zip == null) == (model == null)) throw new CliException("give either --model <dir> or --zip <model.zip>");
        using var loaded = Load(a, model, adapter, zip);
        Commands.Out(a).WriteLine(loaded.Generate(a.GetValue<string>("--prompt")!, a.GetValue<int>("--max-tokens"), m => Commands.Warn(a, m)));
        return 0;
    }

    static int Evaluate(ParseResult a)
    {
        string? model = a.GetValue<string>("--model"), zip = a.GetValue<string>("--zip"), data = a.GetValue<string>("--data");
        string? adapter = a.GetValue<string>("--adapter"), predictions = a.GetValue<string>("--predictions");
        if (data != null || zip != null)
        {
            if (zip == null || data == null) throw new CliException("--zip <model.zip> and --data <file> go together (prompt/completion evaluation)");
            if (model != null) throw new CliException("give either --model (facts QA) or --zip with --data, not both");
            return EvaluateData(a, zip, data, predictions);
        }
        if (model == null) throw new CliException("give --model <dir> (facts QA) or --zip <model.zip> --data <file>");
        if (predictions != null) throw new CliException("option '--predictions' applies to --zip with --data");
        var facts = Commands.Facts(a);
        string split = a.GetValue<string>("--split")!;
        facts.RequireSplit(split);
        using var loaded = Load(a, model, adapter, null);
        var (acc, rows) = Evaluator.ExactMatch(loaded.Model, new LmText(loaded.Tokenizer), QaBuilder.Build(facts, split), loaded.Method);
        var output = Commands.Out(a);
        foreach (var (p, got, ok) in rows) output.WriteLine($"{(ok ? "✓" : "✗")} {p.Prompt} {got}" + (ok ? "" : $"   (expected {p.Answer})"));
        output.WriteLine($"{split} exact match: {ReportWriter.Pct(acc)} ({rows.Count(r => r.Ok)}/{rows.Count})");
        return 0;
    }

    /// <summary>One scored row of a model.zip's Transform output.</summary>
    public sealed class ScoredRow
    {
        public string Prompt { get; set; } = "";
        public string Completion { get; set; } = "";
        public string GeneratedText { get; set; } = "";
        public float Score { get; set; }
        public float ScorePerToken { get; set; }
    }

    /// <summary>Exact match, mean NLL and perplexity of a model.zip on prompt/completion pairs (mlContext.Finetune().Evaluate), optionally per row.</summary>
    static int EvaluateData(ParseResult a, string zip, string data, string? predictions)
    {
        if (predictions != null) OutputFile.Check("--predictions", predictions, a.GetValue<bool>("--overwrite"), ("--data", data), ("--zip", zip));
        var rows = PromptCompletionFile.LoadLines(data);
        var ml = new MLContext(0);
        using var cancel = CliCancellation.Token.Register(() => Persistence.HostAccess.CancelExecution(ml));
        using var loaded = Load(a, null, null, zip);
        var t = loaded.Transformer!;
        int max = ExampleEncoder.EffectiveMaxLength(t.Settings.MaxSequenceLength, t.Model.Config);
        DataChecks.CompletionsFit(rows, data, t.Tokenizer, max, t.Model.Config.MaxPositionEmbeddings, lengthOption: null);
        var input = ml.Data.LoadFromEnumerable(rows.Select(r => new Commands.PromptCompletionRow { Prompt = r.Pair.Prompt, Completion = r.Pair.Completion }));
        // Generation runs once: the scored rows feed both the metrics and the per-row file.
        var scored = ml.Data.CreateEnumerable<ScoredRow>(t.Transform(input), reuseRowObject: false).ToList();
        var metrics = ml.Finetune().Evaluate(ml.Data.LoadFromEnumerable(scored));
        if (predictions != null) OutputFile.Write(predictions, tmp => File.WriteAllText(tmp, PredictionsCsv(scored), new UTF8Encoding(false)));
        Commands.Out(a).WriteLine($"{metrics.RowCount} rows of {data}: exact match {ReportWriter.Pct(metrics.ExactMatchAccuracy)}, " +
                                  $"mean NLL {metrics.MeanNll:F4}, perplexity {metrics.Perplexity:F3}" + (predictions != null ? $"; per-row results in {predictions}" : ""));
        return 0;
    }

    public static string PredictionsCsv(IEnumerable<ScoredRow> rows)
    {
        var sb = new StringBuilder("prompt,expected,generated,exact_match,nll\n");
        foreach (var r in rows)
            sb.Append(Csv(r.Prompt)).Append(',').Append(Csv(r.Completion)).Append(',').Append(Csv(r.GeneratedText)).Append(',')
              .Append(FinetuneMetrics.IsExactMatch(r.Completion, r.GeneratedText) ? "true" : "false").Append(',')
              .Append((-r.ScorePerToken).ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        return sb.ToString();
    }

    /// <summary>RFC 4180: quoted when it holds a comma, quote or line break (spreadsheets then keep leading spaces too).</summary>
    static string Csv(string s) => s.IndexOfAny([',', '"', '\n', '\r']) >= 0 || s != s.Trim() ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
}
