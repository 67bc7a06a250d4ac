using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using ML.Finetune.Samples.Experiment;

namespace ML.Finetune.Samples.Cli;

/// <summary>A usage error found after parsing (a rule between options): printed with a hint, exit code 2.</summary>
public sealed class CliException(string message) : Exception(message);

/// <summary>The System.CommandLine tree of the samples CLI. Every option validates its own value at parse time.</summary>
public static class CliDefinition
{
    public const string Name = "ML.Finetune.Samples";
    public static readonly string[] FinetuneMethodNames = ["full", "lora", "prompt", "prefix"];

    public static RootCommand Build()
    {
        var root = new RootCommand("The main job (no command): pretrained θ_p vs random θ_0, finetuned under every method, held-out exact match.")
        {
            FileOption("--facts", "facts TSV (university, city, state, split); default: Data/universities.tsv"),
            MethodsOption(),
            new Option<string>("--out") { Description = "output folder", DefaultValueFactory = _ => "mainjob-out", HelpName = "dir" },
            IntOption("--seed", 1, 0, "random seed"),
            IntOption("--steps", 150, 1, "finetuning steps per method"),
            new Option<bool>("--no-sweep") { Description = "skip the learning-rate sweep" },
            new Option<bool>("--no-progress") { Description = "no progress bars" },
            DirOption("--model", false, "θ_p HF folder; default: DefaultModel"),
        };
        root.SetAction(Commands.MainJob);

        var pretrain = new Command("pretrain", "pretrain θ_p on the facts' paraphrase corpus")
        {
            RequiredString("--out", "output HF folder"),
            FileOption("--facts", "facts TSV; default: Data/universities.tsv"),
            IntOption("--seed", 1, 0, "random seed"),
            IntOption("--steps", new PretrainOptions().Steps, 1, "pretraining steps"),
        };
        pretrain.SetAction(Commands.Pretrain);

        var finetune = new Command("finetune",
            "finetune with the library's ML.NET estimator; writes <out>/model.zip, <out>/history.csv and <out>/hf/ (full) or <out>/adapter/ (PEFT: lora, prompt, prefix)")
        {
            DirOption("--model", true, "base model HF folder"),
            FileOption("--data", "prompt/completion pairs (.jsonl or .csv)", required: true),
            ChoiceOption("--method", FinetuneMethodNames, required: true, "finetuning method"),
            RequiredString("--out", "output folder (replaced only when finetuning succeeds)"),
            IntOption("--steps", 150, 1, "optimizer steps"),
            PositiveDoubleOption("--lr", "learning rate; default: full 3e-4, lora 3e-3, prompt 3e-2, prefix 1e-2"),
            IntOption("--seed", 1, 0, "random seed"),
            IntOption("--rank", 8, 1, "LoRA rank r (lora); α = 2r"),
            IntOption("--virtual-tokens", 8, 1, "number of virtual tokens (prompt, prefix)"),
            new Option<bool>("--projection") { Description = "train the prefix through the MLP reparameterisation (prefix)" },
        };
        finetune.SetAction(Commands.Finetune);

        var generate = new Command("generate", "greedy continuation of a prompt")
        {
            DirOption("--model", false, "HF model folder"),
            DirOption("--adapter", false, "PEFT adapter folder (LoRA, prompt or prefix tuning) for --model"),
            FileOption("--zip", "ML.NET model.zip written by finetune (instead of --model)"),
            RequiredString("--prompt", "prompt text", "text"),
            IntOption("--max-tokens", 16, 1, "maximum new tokens"),
        };
        generate.SetAction(Commands.Generate);

        var evaluate = new Command("evaluate",
            "exact match on the facts' QA split (--model), or exact match, mean NLL and perplexity on prompt/completion pairs (--zip with --data)")
        {
            DirOption("--model", false, "HF model folder (facts QA)"),
            FileOption("--facts", "facts TSV; default: Data/universities.tsv"),
            ChoiceOption("--split", ["test", "train"], required: false, "QA split", "test"),
            FileOption("--zip", "ML.NET model.zip written by finetune (with --data)"),
            FileOption("--data", "prompt/completion pairs (.jsonl or .csv)"),
        };
        evaluate.SetAction(Commands.Evaluate);

        var bench = new Command("bench", "forward/generation benchmark of a GPT-2-small-shaped model")
        {
            IntOption("--new-tokens", 128, 1, "generated tokens"),
            IntOption("--prompt-length", 128, 1, "prompt tokens"),
            IntOption("--batch", 4, 1, "batch size"),
        };
        bench.SetAction(Commands.Bench);

        var info = new Command("info", "TorchSharp/libtorch versions and an autograd check");
        info.SetAction(_ => InfoCommand.Run());

        root.Add(pretrain);
        root.Add(finetune);
        root.Add(generate);
        root.Add(evaluate);
        root.Add(SweepCommand.Build());
        root.Add(bench);
        root.Add(info);
        return root;
    }

    static Option<string> RequiredString(string name, string description, string helpName = "dir") =>
        new(name) { Description = description, Required = true, HelpName = helpName };

    public static Option<int> IntOption(string name, int fallback, int min, string description) => new(name)
    {
        Description = description, HelpName = "n", DefaultValueFactory = _ => fallback,
        CustomParser = r =>
        {
            string s = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
            if (int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= min) return v;
            r.AddError($"option '{name}' must be an integer ≥ {min}, got '{s}'");
            return fallback;
        },
    };

    public static Option<double?> PositiveDoubleOption(string name, string description) => new(name)
    {
        Description = description, HelpName = "x",
        CustomParser = r =>
        {
            string s = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
            if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && v > 0 && !double.IsInfinity(v)) return v;
            r.AddError($"option '{name}' must be a positive number, got '{s}'");
            return null;
        },
    };

    public static Option<string> FileOption(string name, string description, bool required = false)
    {
        var o = new Option<string>(name) { Description = description, Required = required, HelpName = "file" };
        o.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && !File.Exists(r.Tokens[0].Value)) r.AddError($"option '{name}': file not found: {r.Tokens[0].Value}");
        });
        return o;
    }

    public static Option<string> DirOption(string name, bool required, string description)
    {
        var o = new Option<string>(name) { Description = description, Required = required, HelpName = "dir" };
        o.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && !Directory.Exists(r.Tokens[0].Value)) r.AddError($"option '{name}': folder not found: {r.Tokens[0].Value}");
        });
        return o;
    }

    public static Option<string> ChoiceOption(string name, string[] choices, bool required, string description, string? fallback = null)
    {
        var o = new Option<string>(name) { Description = description, Required = required, HelpName = string.Join("|", choices) };
        if (fallback != null) o.DefaultValueFactory = _ => fallback;
        o.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && !choices.Contains(r.Tokens[0].Value))
                r.AddError($"option '{name}' must be one of {string.Join(", ", choices)}; got '{r.Tokens[0].Value}'");
        });
        return o;
    }

    /// <summary>"--methods a,b": each must be a main-job method.</summary>
    static Option<string> MethodsOption()
    {
        var names = FinetuneMethods.All.Select(m => m.Name).ToArray();
        var o = new Option<string>("--methods")
        {
            Description = $"comma-separated methods ({string.Join(",", names)})", HelpName = "list", DefaultValueFactory = _ => string.Join(",", names),
        };
        o.Validators.Add(r =>
        {
            if (r.Tokens.Count == 0) return;
            var list = SplitList(r.Tokens[0].Value);
            if (list.Count == 0) r.AddError("option '--methods' is empty");
            foreach (var m in list)
                if (!names.Contains(m)) r.AddError($"option '--methods': unknown method '{m}' (available: {string.Join(", ", names)})");
        });
        return o;
    }

    public static List<string> SplitList(string s) =>
        s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
}
