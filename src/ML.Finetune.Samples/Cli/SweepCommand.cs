using System.CommandLine;
using System.Globalization;
using ML.Finetune.Models;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Training;
using Microsoft.ML;

namespace ML.Finetune.Samples.Cli;

/// <summary>
/// `sweep`: the library's <see cref="LearningRateSweep"/> over one method's estimator, on data of any format
/// (<see cref="TrainingDataFile"/>). Validation data is --validation, or else a seeded 20% hold-out of --data. Writes lr_sweep.csv, lr_sweep.png and the best candidate's model.zip into --out
/// through <see cref="OutputFolder"/> (staged and committed, so a failure or Ctrl-C leaves --out as it was).
/// </summary>
public static class SweepCommand
{
    public static Command Build()
    {
        var lrs = new Option<double[]>("--lrs")
        {
            Description = "comma-separated learning rates, e.g. 1e-4,3e-4,1e-3; default: 5 log-spaced from 1e-5 to 1e-2", HelpName = "list",
            CustomParser = r =>
            {
                string s = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
                var list = new List<double>();
                foreach (var x in CliDefinition.SplitList(s))
                {
                    if (double.TryParse(x, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && v > 0 && double.IsFinite(v)) list.Add(v);
                    else { r.AddError($"option '--lrs': '{x}' is not a positive number"); return []; }
                }
                if (list.Count == 0) r.AddError("option '--lrs' is empty");
                return list.ToArray();
            },
        };
        var cmd = new Command("sweep", "learning-rate sweep (library LearningRateSweep): validation loss and exact match per learning rate")
        {
            CliDefinition.DirOption("--model", true, "base model HF folder"),
            CliDefinition.FileOption("--data", CliDefinition.DataHelp, required: true),
            CliDefinition.FileOption("--validation", "validation pairs (same format as --data); default: a seeded 20% hold-out of --data"),
            CliDefinition.ChoiceOption("--method", CliDefinition.FinetuneMethodNames, required: true, "finetuning method"),
            lrs,
            CliDefinition.IntOption("--steps", 50, 1, "optimizer steps per candidate"),
            CliDefinition.OutOption(required: true),
            CliDefinition.IntOption("--seed", 1, 0, "random seed (same for every candidate)"),
            CliDefinition.IntOption("--rank", 8, 1, "LoRA rank r (lora); α = 2r"),
            CliDefinition.IntOption("--virtual-tokens", 8, 1, "number of virtual tokens (prompt, prefix)"),
            new Option<bool>("--projection") { Description = "train the prefix through the MLP reparameterisation (prefix)" },
            CliDefinition.OptionalIntOption("--warmup", 0, "learning-rate warmup steps per candidate (linear from 0); default: steps/10, at least 1"),
            CliDefinition.MaxLengthOption(),
            CliDefinition.DTypeOption(),
            CliDefinition.OverwriteOption(),
            CliDefinition.NoProgressOption(),
        };
        foreach (var o in CliDefinition.DataOptions()) cmd.Add(o);
        cmd.SetAction(Run);
        return cmd;
    }

    static int Run(ParseResult a)
    {
        var output = a.InvocationConfiguration.Output;
        string model = a.GetValue<string>("--model")!, data = a.GetValue<string>("--data")!, method = a.GetValue<string>("--method")!;
        string outDir = a.GetValue<string>("--out")!;
        string? validation = a.GetValue<string>("--validation");
        int steps = a.GetValue<int>("--steps"), seed = a.GetValue<int>("--seed");
        var recipe = EstimatorRecipe.From(a, out var config);
        using var folder = OutputFolder.Open("sweep", outDir, a.GetValue<bool>("--overwrite"), ["lr_sweep.csv", "lr_sweep.png", "model.zip"],
            ("--model", model), ("--data", data), ("--validation", validation));
        int maxLength = recipe.MaxLength;
        var tokenizer = Tokenization.CausalLMTokenizer.FromFolder(model);
        var template = Chat.ChatTemplate.FolderHasTemplate(model) ? Chat.ChatTemplate.FromFolder(model) : null;
        var file = TrainingDataFile.Load(data);
        output.WriteLine($"data: {data}: {file.Summary}");
        DataChecks.Fits(file, tokenizer, template, maxLength, config.MaxPositionEmbeddings, !recipe.AllTokens);
        List<DataLine> train, val;
        TrainingDataFile valFile = file;
        if (validation != null)
        {
            valFile = TrainingDataFile.Load(validation);
            DataChecks.Fits(valFile, tokenizer, template, maxLength, config.MaxPositionEmbeddings, !recipe.AllTokens);
            train = file.Lines.ToList(); val = valFile.Lines.ToList();
        }
        else
        {
            if (file.Lines.Count < 2) throw new InvalidDataException($"{data}: a sweep needs at least 2 examples to hold out validation data (or give --validation)");
            var shuffled = file.Lines.ToList();
            var rng = new Random(seed);
            for (int i = shuffled.Count - 1; i > 0; i--) { int j = rng.Next(i + 1); (shuffled[i], shuffled[j]) = (shuffled[j], shuffled[i]); }
            int nVal = Math.Max(1, shuffled.Count / 5);
            val = shuffled.Take(nVal).ToList(); train = shuffled.Skip(nVal).ToList();
        }
        var ml = new MLContext(seed);
        using var cancel = CliCancellation.Token.Register(() => Persistence.HostAccess.CancelExecution(ml));
        var trainView = file.ToDataView(ml, train);
        var valView = valFile.ToDataView(ml, val);
        // Exact match needs an expected reply: a completion, or a validation conversation's final assistant message.
        bool exactMatch = valFile.Format == Estimators.FinetuneDataFormat.PromptCompletion
            || (valFile.Format == Estimators.FinetuneDataFormat.Conversation && val.All(l => l.Messages![^1].Role == "assistant"));
        var candidates = new LearningRateSweepOptions { Candidates = a.GetValue<double[]>("--lrs") }.ResolveCandidates();
        var progress = ProgressReporter.For(output, a.GetValue<bool>("--no-progress"));
        int created = 0;
        Estimators.FinetuneEstimatorBase Create()
        {
            // The sweep creates one estimator per candidate, in order: the label names the candidate this one trains.
            string label = $"lr {CliDefinition.Number(candidates[created])} ({created + 1}/{candidates.Count})";
            created++;
            var e = recipe.Create(ml, candidates[created - 1], format: file.Format); // the sweep sets learning rate, steps and seed itself
            e.ProgressCallback = p => progress.Step(label, p.Record.Step + 1, p.TotalSteps, p.Record.TrainLoss, p.Tokens);
            return e;
        }
        string staging = folder.NewStaging();
        var options = new LearningRateSweepOptions
        {
            Candidates = candidates.ToArray(), StepsPerCandidate = steps, Seed = seed,
            Metric = exactMatch ? (t, v) => ml.Finetune().Evaluate(t.Transform(v)).ExactMatchAccuracy : null, MetricName = "exact match",
            PlotPath = Path.Combine(staging, "lr_sweep.png"),
        };
        using var result = LearningRateSweep.Run(Create, trainView, valView, options, row =>
        {
            progress.EndBar();
            output.WriteLine($"lr {CliDefinition.Number(row.LearningRate)}: validation loss {row.ValidationLoss.ToString("F4", CultureInfo.InvariantCulture)}" +
                             (row.Error != null ? $" ({row.Error})" : ""));
        });
        CliCancellation.Token.ThrowIfCancellationRequested();
        File.WriteAllText(Path.Combine(staging, "lr_sweep.csv"), result.ToTable());
        CliCancellation.Token.ThrowIfCancellationRequested();
        ml.Model.Save(result.BestTransformer, trainView.Schema, Path.Combine(staging, "model.zip"));
        CliCancellation.Token.ThrowIfCancellationRequested();
        folder.Commit();
        output.WriteLine(Table(result.Rows, result.BestLearningRate));
        output.WriteLine($"{method} on {train.Count} train / {val.Count} validation examples, {steps} steps per candidate; best lr " +
                         $"{CliDefinition.Number(result.BestLearningRate)} → {folder.FullPath}/model.zip, lr_sweep.csv, lr_sweep.png");
        return 0;
    }

    /// <summary>Markdown table: learning rate, validation loss, exact match, best marker.</summary>
    public static string Table(IReadOnlyList<LearningRateSweepRow> rows, double best)
    {
        var sb = new System.Text.StringBuilder("| learning rate | validation loss | exact match | |\n|---|---|---|---|\n");
        foreach (var r in rows)
            sb.AppendLine($"| {CliDefinition.Number(r.LearningRate)} | " +
                          (r.Error != null ? "diverged" : r.ValidationLoss.ToString("F4", CultureInfo.InvariantCulture)) + " | " +
                          (r.Metric is double m ? ReportWriter.Pct(m) : "–") + $" | {(r.LearningRate == best ? "best" : "")} |");
        return sb.ToString().TrimEnd();
    }
}
