using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.ML;
using ML.Finetune.Chat;
using ML.Finetune.Estimators;
using ML.Finetune.Models;
using ML.Finetune.Persistence;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;
using ML.Finetune.Transformers;

namespace ML.Finetune.Samples.Cli;

/// <summary>
/// `finetune`: the library's ML.NET estimator on a data file (conversations, plain text or prompt/completion pairs, detected
/// from the file: <see cref="TrainingDataFile"/>). Writes into --out: model.zip
/// (mlContext.Model.Save), history.csv, loss.png and the weights as an HF folder hf/ (full) or a PEFT adapter folder
/// adapter/ (lora, prompt, prefix). Training keeps checkpoints in --out/.ml-finetune/checkpoints (every
/// --checkpoint-every steps, and when interrupted), so rerunning the same command resumes bit-exactly.
/// </summary>
public static class FinetuneCommand
{
    const string Name = "finetune";

    public static Command Build()
    {
        var cmd = new Command(Name,
            "finetune with the library's ML.NET estimator; writes <out>/model.zip, <out>/history.csv, <out>/loss.png and <out>/hf/ (full) " +
            "or <out>/adapter/ (PEFT: lora, prompt, prefix). Ctrl-C stops at a step boundary with a checkpoint (exit 130); rerunning the same command resumes.")
        {
            CliDefinition.DirOption("--model", true, "base model HF folder (config.json, model.safetensors, tokenizer files)"),
            CliDefinition.FileOption("--data", CliDefinition.DataHelp, required: true),
            CliDefinition.ChoiceOption("--method", CliDefinition.FinetuneMethodNames, required: true, "finetuning method"),
            CliDefinition.OutOption(required: true),
            CliDefinition.IntOption("--steps", 150, 1, "optimizer steps (batch 16)"),
            CliDefinition.PositiveDoubleOption("--lr", "learning rate; default: full 3e-4, lora 3e-3, prompt 3e-2, prefix 1e-2"),
            CliDefinition.OptionalIntOption("--warmup", 0, "learning-rate warmup steps, linear from 0 as in Hugging Face's schedulers (so the first " +
                "step only updates the optimizer's moments; history.csv shows lr 0 there); cosine decay after; default: steps/10, at least 1"),
            CliDefinition.IntOption("--seed", 1, 0, "random seed"),
            CliDefinition.IntOption("--rank", 8, 1, "LoRA rank r (lora); α = 2r"),
            CliDefinition.IntOption("--virtual-tokens", 8, 1, "number of virtual tokens (prompt, prefix)"),
            new Option<bool>("--projection") { Description = "train the prefix through the MLP reparameterisation (prefix)" },
            CliDefinition.MaxLengthOption(),
            CliDefinition.DTypeOption(),
            CliDefinition.IntOption("--checkpoint-every", 0, 0, "also checkpoint every n steps, so a crash loses at most n (0: only when interrupted)"),
            CliDefinition.OverwriteOption(),
            CliDefinition.NoProgressOption(),
        };
        foreach (var o in CliDefinition.DataOptions()) cmd.Add(o);
        cmd.SetAction(Run);
        return cmd;
    }

    static int Run(ParseResult a)
    {
        var output = Commands.Out(a);
        string model = a.GetValue<string>("--model")!, data = a.GetValue<string>("--data")!, method = a.GetValue<string>("--method")!;
        int steps = a.GetValue<int>("--steps");
        bool overwrite = a.GetValue<bool>("--overwrite");
        double lr = a.GetValue<double?>("--lr") ?? EstimatorRecipe.DefaultLearningRate(method);
        string weights = method == "full" ? "hf" : "adapter";
        var recipe = EstimatorRecipe.From(a, out var config);
        using var folder = OutputFolder.Open(Name, a.GetValue<string>("--out")!, overwrite, ["model.zip", "history.csv", "loss.png", weights],
            ("--model", model), ("--data", data));
        var file = TrainingDataFile.Load(data);
        output.WriteLine($"data: {data}: {file.Summary}{(recipe.Packing ? ", packed into rows of " + recipe.MaxLength + " tokens" : "")}");
        DataChecks.Fits(file, CausalLMTokenizer.FromFolder(model), ChatTemplate.FolderHasTemplate(model) ? ChatTemplate.FromFolder(model) : null,
            recipe.MaxLength, config.MaxPositionEmbeddings, !recipe.AllTokens);
        CliCancellation.Token.ThrowIfCancellationRequested();

        var settings = recipe.Describe(lr);
        settings["data"] = RealPath.Of(data);
        settings["data sha256"] = Sha256(data);
        int resumeFrom = PrepareResume(a, folder, settings, overwrite);

        var ml = new MLContext(recipe.Seed);
        using var cancel = CliCancellation.Token.Register(() => HostAccess.CancelExecution(ml));
        var dv = file.ToDataView(ml);
        var estimator = recipe.Create(ml, lr, folder.CheckpointPath, a.GetValue<int>("--checkpoint-every"), file.Format);
        var progress = ProgressReporter.For(output, a.GetValue<bool>("--no-progress"));
        estimator.ProgressCallback = p => progress.Step(null, p.Record.Step + 1, p.TotalSteps, p.Record.TrainLoss, p.Tokens);
        if (resumeFrom > 0) output.WriteLine($"resuming from the checkpoint at step {resumeFrom}/{steps} in {folder.CheckpointPath}");
        folder.BeginRun(settings);
        var sw = Stopwatch.StartNew();
        FinetuneTransformer transformer;
        try { transformer = estimator.Fit(dv); }
        catch (Exception e) when (CliErrors.Root(e) is OperationCanceledException)
        {
            progress.EndBar();
            int at = NewestCheckpointStep(folder.CheckpointPath);
            output.WriteLine(at > 0
                ? $"stopped after step {at}/{steps}; checkpoint in {folder.CheckpointPath}: run the same command again to resume"
                : "stopped before the first step; nothing to resume");
            throw;
        }
        catch (Exception e) when (CliErrors.Root(e) is FinetuneDivergedException d)
        {
            folder.EndRun(); // resuming would diverge again: the same steps replay exactly
            throw new InvalidOperationException($"training on {data} diverged in step {d.Step + 1} of {steps}: the {d.Quantity} became " +
                $"{d.Loss.ToString(CultureInfo.InvariantCulture)} with --lr {CliDefinition.Number(lr)}; gradients are already clipped " +
                "to norm 1, so the steps are too large for this model: lower --lr (nothing was written)");
        }
        using (transformer)
        {
            progress.EndBar();
            string staging = folder.NewStaging();
            void Save(Action write) { CliCancellation.Token.ThrowIfCancellationRequested(); write(); }
            Save(() => ml.Model.Save(transformer, dv.Schema, Path.Combine(staging, "model.zip")));
            Save(() => WriteWeights(transformer, method, model, Path.Combine(staging, weights)));
            Save(() => transformer.TrainingHistory.WriteCsv(Path.Combine(staging, "history.csv")));
            Save(() => transformer.TrainingHistory.SaveLossPlot(Path.Combine(staging, "loss.png"), title: $"finetuning loss: {method}, lr {CliDefinition.Number(lr)}"));
            CliCancellation.Token.ThrowIfCancellationRequested();
            folder.Commit();
            folder.EndRun();
            var last = transformer.TrainingHistory.Records[^1];
            output.WriteLine($"finetuned ({method}) on {file.Lines.Count} {TrainingDataFile.Noun(file.Format, file.Lines.Count)} of {data}, {transformer.TrainingHistory.Records.Count} steps" +
                             (resumeFrom > 0 ? $" (resumed at {resumeFrom})" : "") + $", final loss {last.TrainLoss:F3}, ‖θ−θ_p‖₂ {last.Distance:F3}, " +
                             $"{sw.Elapsed.TotalSeconds:F0} s → {folder.FullPath}/model.zip, history.csv, loss.png, {weights}/");
        }
        return 0;
    }

    /// <summary>
    /// The step an unfinished run with these settings resumes from (0: none). Checkpoints of a run with other settings
    /// are refused, or discarded with --overwrite (they are this command's own).
    /// </summary>
    static int PrepareResume(ParseResult a, OutputFolder folder, IReadOnlyDictionary<string, string> settings, bool overwrite)
    {
        int at = NewestCheckpointStep(folder.CheckpointPath);
        var previous = folder.UnfinishedRun();
        if (at == 0 || previous == null) { if (at > 0 || previous != null) folder.EndRun(); return 0; }
        var differences = settings.Keys.Union(previous.Keys).Where(k => previous.GetValueOrDefault(k) != settings.GetValueOrDefault(k))
            .Select(k => $"{k}: {previous.GetValueOrDefault(k, "–")} → {settings.GetValueOrDefault(k, "–")}").ToList();
        if (differences.Count == 0) return at;
        if (!overwrite)
            throw new CliException($"--out {a.GetValue<string>("--out")} holds an interrupted finetune (step {at}) with other settings ({string.Join("; ", differences)}); " +
                                   "rerun it with the same options to resume, or add --overwrite to discard it");
        folder.EndRun();
        return 0;
    }

    static int NewestCheckpointStep(string folder) =>
        TrainingCheckpoint.List(folder).Select(d => int.Parse(Path.GetFileName(d)["step-".Length..], CultureInfo.InvariantCulture)).DefaultIfEmpty(0).Max();

    static void WriteWeights(FinetuneTransformer transformer, string method, string model, string folder)
    {
        switch (method)
        {
            case "lora": Adapters.PeftLoraIO.Export(transformer, folder); break;
            case "prompt" or "prefix": Adapters.PeftPromptLearning.Save(transformer.Method, transformer.Model, folder, Path.GetFullPath(model)); break;
            default:
                CausalLMFactory.SavePretrained(transformer.Model, folder);
                foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", Pretrainer.InfoFile })
                    if (File.Exists(Path.Combine(model, f))) File.Copy(Path.Combine(model, f), Path.Combine(folder, f));
                break;
        }
    }

    static string Sha256(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(s)).ToLowerInvariant();
    }
}
