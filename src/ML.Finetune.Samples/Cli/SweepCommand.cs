using System.CommandLine;
using System.Globalization;
using ML.Finetune.Models;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Training;
using Microsoft.ML;

namespace ML.Finetune.Samples.Cli;

/// <summary>
/// `sweep`: the library's <see cref="LearningRateSweep"/> over one method's estimator. Validation data is --validation, or
/// else a seeded 20% hold-out of --data. Writes lr_sweep.csv, lr_sweep.png and the best candidate's model.zip into --out
/// (built in a temp folder and moved, so a failure leaves --out untouched).
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
            CliDefinition.FileOption("--data", "prompt/completion pairs (.jsonl or .csv)", required: true),
            CliDefinition.FileOption("--validation", "validation pairs; default: a seeded 20% hold-out of --data"),
            CliDefinition.ChoiceOption("--method", CliDefinition.FinetuneMethodNames, required: true, "finetuning method"),
            lrs,
            CliDefinition.IntOption("--steps", 50, 1, "optimizer steps per candidate"),
            new Option<string>("--out") { Description = "output folder", Required = true, HelpName = "dir" },
            CliDefinition.IntOption("--seed", 1, 0, "random seed (same for every candidate)"),
            CliDefinition.IntOption("--rank", 8, 1, "LoRA rank r (lora); α = 2r"),
            CliDefinition.IntOption("--virtual-tokens", 8, 1, "number of virtual tokens (prompt, prefix)"),
            new Option<bool>("--projection") { Description = "train the prefix through the MLP reparameterisation (prefix)" },
        };
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
        bool projection = a.GetValue<bool>("--projection");
        if (projection && method != "prefix") throw new CliException("option '--projection' applies to --method prefix only");
        var pairs = PromptCompletionFile.Load(data).ToList();
        List<QaPair> train, val;
        if (validation != null) { train = pairs; val = PromptCompletionFile.Load(validation).ToList(); }
        else
        {
            if (pairs.Count < 2) throw new InvalidDataException($"{data}: a sweep needs at least 2 examples to hold out validation data (or give --validation)");
            var shuffled = pairs.ToList();
            var rng = new Random(seed);
            for (int i = shuffled.Count - 1; i > 0; i--) { int j = rng.Next(i + 1); (shuffled[i], shuffled[j]) = (shuffled[j], shuffled[i]); }
            int nVal = Math.Max(1, shuffled.Count / 5);
            val = shuffled.Take(nVal).ToList(); train = shuffled.Skip(nVal).ToList();
        }
        var ml = new MLContext(seed);
        IDataView View(IEnumerable<QaPair> ps) => ml.Data.LoadFromEnumerable(ps.Select(p => new Commands.PromptCompletionRow { Prompt = p.Prompt, Completion = p.Completion }));
        var trainView = View(train);
        var valView = View(val);
        var config = CausalLMConfig.Load(model);
        int rank = a.GetValue<int>("--rank"), k = a.GetValue<int>("--virtual-tokens");
        Estimators.FinetuneEstimatorBase Create()
        {
            Estimators.FinetuneOptions o = method switch
            {
                "lora" => new Estimators.LoraFinetuneOptions { Rank = rank, Alpha = 2 * rank },
                "prompt" => new Estimators.PromptTuneOptions { NumVirtualTokens = k },
                "prefix" => new Estimators.PrefixTuneOptions { NumVirtualTokens = k, PrefixProjection = projection },
                _ => new Estimators.FullFinetuneOptions(),
            };
            o.BaseModelPath = Path.GetFullPath(model); o.BatchSize = 16; o.WarmupSteps = Math.Max(1, steps / 10);
            o.Schedule = LearningRateScheduleKind.Cosine; o.NumberOfThreads = 1;
            o.MaxSequenceLength = config.MaxPositionEmbeddings; o.Generation = new Estimators.FinetuneGenerationOptions { MaxNewTokens = 8 };
            return method switch
            {
                "lora" => ml.Transforms.LoraFinetune((Estimators.LoraFinetuneOptions)o),
                "prompt" => ml.Transforms.PromptTune((Estimators.PromptTuneOptions)o),
                "prefix" => ml.Transforms.PrefixTune((Estimators.PrefixTuneOptions)o),
                _ => ml.Transforms.Finetune((Estimators.FullFinetuneOptions)o),
            };
        }
        double bestLr = double.NaN;
        string full = OutputFolder.Write(outDir, tmp =>
        {
            var options = new LearningRateSweepOptions
            {
                Candidates = a.GetValue<double[]>("--lrs"), StepsPerCandidate = steps, Seed = seed,
                Metric = (t, v) => ml.Finetune().Evaluate(t.Transform(v)).ExactMatchAccuracy, MetricName = "exact match",
                PlotPath = Path.Combine(tmp, "lr_sweep.png"),
            };
            using var result = LearningRateSweep.Run(Create, trainView, valView, options,
                row => output.WriteLine($"lr {row.LearningRate:G3}: validation loss {row.ValidationLoss:F4}" + (row.Error != null ? $" ({row.Error})" : "")));
            File.WriteAllText(Path.Combine(tmp, "lr_sweep.csv"), result.ToTable());
            ml.Model.Save(result.BestTransformer, trainView.Schema, Path.Combine(tmp, "model.zip"));
            output.WriteLine(Table(result.Rows, result.BestLearningRate));
            bestLr = result.BestLearningRate;
        });
        output.WriteLine($"{method} on {train.Count} train / {val.Count} validation examples, {steps} steps per candidate; best lr {bestLr:G3} " +
                         $"→ {full}/model.zip, {full}/lr_sweep.csv, {full}/lr_sweep.png");
        return 0;
    }

    /// <summary>Markdown table: learning rate, validation loss, exact match, best marker.</summary>
    public static string Table(IReadOnlyList<LearningRateSweepRow> rows, double best)
    {
        var sb = new System.Text.StringBuilder("| learning rate | validation loss | exact match | |\n|---|---|---|---|\n");
        foreach (var r in rows)
            sb.AppendLine($"| {r.LearningRate.ToString("G3", CultureInfo.InvariantCulture)} | " +
                          (r.Error != null ? "diverged" : r.ValidationLoss.ToString("F4", CultureInfo.InvariantCulture)) + " | " +
                          (r.Metric is double m ? ReportWriter.Pct(m) : "–") + $" | {(r.LearningRate == best ? "best" : "")} |");
        return sb.ToString().TrimEnd();
    }
}
