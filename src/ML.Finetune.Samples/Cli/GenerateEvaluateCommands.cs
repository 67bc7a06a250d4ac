using System.CommandLine;
using System.Globalization;
using System.Text;
using Microsoft.ML;
using ML.Finetune.Chat;
using ML.Finetune.Estimators;
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
            "greedy continuation of a prompt, or with --chat the assistant's reply to a conversation (the model's chat template with the " +
            "generation prompt; stops at the end-of-turn token). Prompt + virtual tokens + new tokens must fit the model's context: a longer " +
            "prompt is cut from the left (with a warning), the same way for --model and --zip")
        {
            CliDefinition.DirOption("--model", false, "HF model folder"),
            CliDefinition.DirOption("--adapter", false, "PEFT adapter folder (LoRA, prompt or prefix tuning) for --model"),
            CliDefinition.FileOption("--zip", "ML.NET model.zip written by finetune (instead of --model)"),
            BaseModelOption(),
            new Option<string>("--prompt") { Description = "prompt text; with --chat: the user's message", HelpName = "text" },
            new Option<bool>("--chat") { Description = "chat: apply the model's chat template to --prompt (one user message) or --messages and print the reply" },
            new Option<string>("--messages")
            {
                Description = "with --chat: the conversation as JSON, [{\"role\": \"user\", \"content\": \"...\"}, ...] or {\"messages\": [...]}",
                HelpName = "json",
            },
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
        string? prompt = a.GetValue<string>("--prompt"), messages = a.GetValue<string>("--messages");
        bool chat = a.GetValue<bool>("--chat");
        if (messages != null && !chat) throw new CliException("option '--messages' needs --chat");
        if ((prompt == null) == (messages == null))
            throw new CliException(chat ? "give either --prompt <user message> or --messages <json> with --chat" : "option '--prompt' is required");
        // Parse the conversation before loading the model: a typo should not cost a model load.
        IReadOnlyList<ChatMessage>? conversation = !chat ? null
            : messages != null ? ParseMessages(messages) : [ChatMessage.User(prompt!)];
        using var loaded = Load(a, model, adapter, zip);
        int maxTokens = a.GetValue<int>("--max-tokens");
        Commands.Out(a).WriteLine(conversation != null
            ? loaded.GenerateChat(conversation, maxTokens, m => Commands.Warn(a, m))
            : loaded.Generate(prompt!, maxTokens, m => Commands.Warn(a, m)));
        return 0;
    }

    static IReadOnlyList<ChatMessage> ParseMessages(string json)
    {
        try { return ChatConversation.Parse(json, "--messages"); }
        catch (FormatException e) { throw new CliException(e.Message); }
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

    /// <summary>One scored row of a model.zip's Transform output, per data format.</summary>
    public sealed class ScoredRow
    {
        public string Prompt { get; set; } = "";
        public string Completion { get; set; } = "";
        public string GeneratedText { get; set; } = "";
        public float Score { get; set; }
        public float ScorePerToken { get; set; }
    }

    public sealed class ScoredConversation
    {
        public string Messages { get; set; } = "";
        public string GeneratedText { get; set; } = "";
        public float Score { get; set; }
        public float ScorePerToken { get; set; }
    }

    public sealed class ScoredText
    {
        public string Text { get; set; } = "";
        public string GeneratedText { get; set; } = "";
        public float Score { get; set; }
        public float ScorePerToken { get; set; }
    }

    /// <summary>
    /// Mean NLL, perplexity and (where there is an expected reply) exact match of a model.zip on a data file of any format
    /// (mlContext.Finetune().Evaluate), optionally per row. Conversations are scored on their final assistant message,
    /// which must be there; texts on every token.
    /// </summary>
    static int EvaluateData(ParseResult a, string zip, string data, string? predictions)
    {
        if (predictions != null) OutputFile.Check("--predictions", predictions, a.GetValue<bool>("--overwrite"), ("--data", data), ("--zip", zip));
        var file = TrainingDataFile.Load(data);
        var ml = new MLContext(0);
        using var cancel = CliCancellation.Token.Register(() => Persistence.HostAccess.CancelExecution(ml));
        using var loaded = Load(a, null, null, zip);
        var t = loaded.Transformer!;
        int max = ExampleEncoder.EffectiveMaxLength(t.Settings.MaxSequenceLength, t.Model.Config);
        DataChecks.Fits(file, t.Tokenizer, t.ChatTemplate, max, t.Model.Config.MaxPositionEmbeddings, assistantOnly: false, lengthOption: null);
        if (file.Format == FinetuneDataFormat.Conversation && file.Lines.FirstOrDefault(l => l.Messages![^1].Role != "assistant") is { } open)
            throw new InvalidDataException($"{data}:{open.Line}: the conversation does not end with an assistant message, so there is no reply to compare with");
        var output = t.Transform(file.ToDataView(ml));
        // Generation runs once: the scored rows feed both the metrics and the per-row file.
        (IDataView Scored, string Csv) Rows<T>(Func<T, string[]> csv, string header) where T : class, new()
        {
            var rows = ml.Data.CreateEnumerable<T>(output, reuseRowObject: false).ToList();
            return (ml.Data.LoadFromEnumerable(rows), PredictionsCsv(header, rows.Select(csv)));
        }
        static string Nll(float perToken) => (-perToken).ToString("R", CultureInfo.InvariantCulture);
        static string Match(string expected, string generated) => FinetuneMetrics.IsExactMatch(expected, generated) ? "true" : "false";
        var (scored, csvText) = file.Format switch
        {
            FinetuneDataFormat.Conversation => Rows<ScoredConversation>(r =>
            {
                var m = Chat.ChatConversation.Parse(r.Messages);
                string expected = m[^1].Content ?? "";
                return [Chat.ChatConversation.ToJson(m.Take(m.Count - 1)), expected, r.GeneratedText, Match(expected, r.GeneratedText), Nll(r.ScorePerToken)];
            }, "messages,expected,generated,exact_match,nll"),
            FinetuneDataFormat.Text => Rows<ScoredText>(r => [r.Text, r.GeneratedText, Nll(r.ScorePerToken)], "text,generated,nll"),
            _ => Rows<ScoredRow>(r => [r.Prompt, r.Completion, r.GeneratedText, Match(r.Completion, r.GeneratedText), Nll(r.ScorePerToken)],
                "prompt,expected,generated,exact_match,nll"),
        };
        var metrics = ml.Finetune().Evaluate(scored);
        if (predictions != null) OutputFile.Write(predictions, tmp => File.WriteAllText(tmp, csvText, new UTF8Encoding(false)));
        string exact = double.IsNaN(metrics.ExactMatchAccuracy) ? "" : $"exact match {ReportWriter.Pct(metrics.ExactMatchAccuracy)}, ";
        Commands.Out(a).WriteLine($"{metrics.RowCount} rows of {data}: {exact}" +
                                  $"mean NLL {metrics.MeanNll:F4}, perplexity {metrics.Perplexity:F3}" + (predictions != null ? $"; per-row results in {predictions}" : ""));
        return 0;
    }

    /// <summary>A header line and one CSV record per row (nll = mean negative log-likelihood per scored token).</summary>
    public static string PredictionsCsv(string header, IEnumerable<string[]> rows)
    {
        var sb = new StringBuilder(header).Append('\n');
        foreach (var r in rows) sb.Append(string.Join(',', r.Select(Csv))).Append('\n');
        return sb.ToString();
    }

    /// <summary>RFC 4180: quoted when it holds a comma, quote or line break (spreadsheets then keep leading spaces too).</summary>
    static string Csv(string s) => s.IndexOfAny([',', '"', '\n', '\r']) >= 0 || s != s.Trim() ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
}
