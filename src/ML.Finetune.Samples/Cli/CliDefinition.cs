using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using ML.Finetune.Samples.Experiment;

namespace ML.Finetune.Samples.Cli;

/// <summary>The System.CommandLine tree of the samples CLI. Every option validates its own value at parse time.</summary>
public static class CliDefinition
{
    public const string Name = "ML.Finetune.Samples";
    public static readonly string[] FinetuneMethodNames = ["full", "lora", "prompt", "prefix"];
    public const string DataHelp = TrainingDataFile.Help;

    public static RootCommand Build()
    {
        var root = new RootCommand("The main job (no command): pretrained θ_p vs random θ_0, finetuned under every method, held-out exact match.")
        {
            FileOption("--facts", "facts TSV (columns university, city, state, split = train|test); default: Data/universities.tsv"),
            MethodsOption(),
            new Option<string>("--out") { Description = "output folder (report.md, PNG plots)", DefaultValueFactory = _ => "mainjob-out", HelpName = "dir" },
            IntOption("--seed", 1, 0, "random seed"),
            IntOption("--steps", 150, 1, "finetuning steps per method"),
            new Option<bool>("--no-sweep") { Description = "skip the learning-rate sweep" },
            NoProgressOption(),
            DirOption("--model", false, "θ_p HF folder; default: DefaultModel"),
            OverwriteOption(),
        };
        root.SetAction(MainJobCommand.MainJob);

        var pretrain = new Command("pretrain", "pretrain θ_p on the facts' paraphrase corpus; writes an HF folder into --out")
        {
            OutOption(required: true),
            FileOption("--facts", "facts TSV; default: Data/universities.tsv"),
            IntOption("--seed", 1, 0, "random seed"),
            IntOption("--steps", new PretrainOptions().Steps, 1, "pretraining steps"),
            OverwriteOption(),
            NoProgressOption(),
        };
        pretrain.SetAction(MainJobCommand.Pretrain);

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
        root.Add(FinetuneCommand.Build());
        root.Add(GenerateEvaluateCommands.BuildGenerate());
        root.Add(GenerateEvaluateCommands.BuildEvaluate());
        root.Add(SweepCommand.Build());
        root.Add(bench);
        root.Add(info);
        return root;
    }

    /// <summary>A number as a user types it: 3 significant digits, "1e6" / "3e-5" rather than "1E+06".</summary>
    public static string Number(double v) =>
        v.ToString("G3", CultureInfo.InvariantCulture).Replace("E+0", "e").Replace("E-0", "e-").Replace("E+", "e").Replace("E-", "e-");

    public static Option<string> OutOption(bool required) => new("--out")
    {
        Description = "output folder: new, empty, or written by this command before; only this command's own outputs are ever replaced",
        Required = required, HelpName = "dir",
    };

    public static Option<bool> OverwriteOption(string? description = null) => new("--overwrite")
    {
        Description = description ?? "use a non-empty --out that this command did not write; still only this command's own outputs are replaced",
    };

    public static Option<bool> NoProgressOption() => new("--no-progress")
    {
        Description = "no progress (default: a bar on a terminal, a line every ~10% of the steps when the output is redirected)",
    };

    public static readonly string[] DTypeNames = ["auto", "float32", "bfloat16"];

    /// <summary>--dtype: the compute dtype (auto = bf16 on CUDA and CPUs with bf16 instructions, float32 elsewhere).</summary>
    public static Option<string> DTypeOption() => ChoiceOption("--dtype", DTypeNames, required: false,
        "compute dtype: auto picks bfloat16 on CUDA and on CPUs with AVX512-BF16/AMX, float32 elsewhere (see `info`)", "auto");

    public static Option<int?> MaxLengthOption() => OptionalIntOption("--max-length", 2,
        "maximum tokens of an example (and of a packed row); prompt/completion: longer prompts are cut from the left, a completion that " +
        "does not fit is an error; a conversation that does not fit is an error; a longer text is split into windows; " +
        "default and maximum: the model's context (max_position_embeddings)");

    /// <summary>The data-format and packing options of `finetune` and `sweep`.</summary>
    public static Option[] DataOptions() =>
    [
        new Option<bool>("--packing")
        {
            Description = "sequence packing: concatenate examples into rows of --max-length tokens (each keeps its own positions and attention), " +
                          "the same loss with far less padding; the batch of 16 then counts rows",
        },
        new Option<bool>("--all-tokens") { Description = "conversations: train on every token, not only the assistant messages (the default)" },
        new Option<bool>("--gradient-checkpointing")
        {
            Description = "activation checkpointing per decoder layer: the same gradients with far less memory for long rows, about one more " +
                          "forward pass of time (docs/training-memory.md)",
        },
        new Option<string>("--targets")
        {
            Description = "LoRA target modules, comma-separated (e.g. q_proj,v_proj,lm_head) or all-linear; default: PEFT's for the family (lora)",
            HelpName = "list",
        },
    ];

    /// <summary>An integer option without a default (null when absent).</summary>
    public static Option<int?> OptionalIntOption(string name, int min, string description) => new(name)
    {
        Description = description, HelpName = "n", CustomParser = r => ParseInt(r, name, min),
    };

    public static Option<int> IntOption(string name, int fallback, int min, string description) => new(name)
    {
        Description = description, HelpName = "n", DefaultValueFactory = _ => fallback,
        CustomParser = r => ParseInt(r, name, min) ?? fallback,
    };

    /// <summary>The option's integer, or null after reporting a value below <paramref name="min"/> or not an integer.</summary>
    static int? ParseInt(ArgumentResult r, string name, int min)
    {
        string s = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
        if (int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= min) return v;
        r.AddError($"option '{name}' must be an integer ≥ {min}, got '{s}'");
        return null;
    }

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
