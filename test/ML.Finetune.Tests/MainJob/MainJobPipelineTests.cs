using ML.Finetune.Models;
using ML.Finetune.Samples.Cli;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Tests.MainJob;

/// <summary>Reduced configuration: a few universities, a tiny Llama, a handful of steps.</summary>
public class MainJobPipelineTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("mlft-mainjob").FullName;
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static FactCorpus SmallFacts() =>
        FactCorpus.Load(Path.Combine(AppContext.BaseDirectory, "Data", "universities.tsv")).Take(4, 3);

    static readonly PretrainOptions Tiny = new() { Seed = 3, Steps = 6, BatchSize = 8, HiddenSize = 32, Layers = 1, Heads = 2, IntermediateSize = 64 };

    [Fact]
    public void Pretrain_is_deterministic_by_seed_and_loads_back()
    {
        TorchSharp.torch.set_num_threads(1);
        var facts = SmallFacts();
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b"), c = Path.Combine(_dir, "c");
        Pretrainer.Run(facts, Tiny, a).model.Dispose();
        Pretrainer.Run(facts, Tiny, b).model.Dispose();
        Pretrainer.Run(facts, Tiny with { Seed = 4 }, c).model.Dispose();
        byte[] wa = File.ReadAllBytes(Path.Combine(a, "model.safetensors"));
        Assert.Equal(wa, File.ReadAllBytes(Path.Combine(b, "model.safetensors")));
        Assert.NotEqual(wa, File.ReadAllBytes(Path.Combine(c, "model.safetensors")));
        foreach (var f in new[] { "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", Pretrainer.InfoFile })
            Assert.True(File.Exists(Path.Combine(a, f)), f);
        Assert.Equal(facts.Hash(), Pretrainer.StoredFactsHash(a));
        var tok = CausalLMTokenizer.FromFolder(a);
        using var m = CausalLMFactory.LoadPretrained(a);
        tok.ValidateAgainstModel(m.Config.VocabSize);
        var text = new LmText(tok);
        var ids = text.Encode(QaBuilder.Prompt(facts.Test[0].University) + " " + facts.Test[0].City);
        Assert.DoesNotContain(ids, i => i == tok.TokenToId(Pretrainer.Unk));
        Assert.Empty(Directory.GetDirectories(_dir, "*.tmp-*"));
    }

    [Fact]
    public void Cli_rejects_bad_arguments()
    {
        var err = new StringWriter();
        Assert.Equal(2, Commands.Run(["frobnicate"], err));
        Assert.Contains("'frobnicate'", err.ToString());
        err = new StringWriter();
        Assert.Equal(2, Commands.Run(["--bogus", "1"], err));
        Assert.Contains("'--bogus'", err.ToString());
        err = new StringWriter();
        Assert.Equal(2, Commands.Run(["--methods", "nope"], err));
        Assert.Contains("unknown method 'nope'", err.ToString());
        err = new StringWriter();
        Assert.Equal(2, Commands.Run(["pretrain", "--steps", "-3", "--out", _dir], err));
        Assert.Contains("'--steps'", err.ToString());
        err = new StringWriter();
        Assert.Equal(2, Commands.Run(["finetune", "--model", Path.Combine(_dir, "missing"), "--data", "x.jsonl", "--method", "full", "--out", _dir], err));
        Assert.Contains("folder not found", err.ToString());
        err = new StringWriter();
        Assert.Equal(2, Commands.Run(["generate", "--model"], err));
        Assert.Contains("'--model'", err.ToString());
    }

    [Fact]
    public void Finetune_with_malformed_data_names_the_line_and_writes_nothing()
    {
        string model = Path.Combine(_dir, "m");
        Pretrainer.Run(SmallFacts(), Tiny, model).model.Dispose();
        string data = Path.Combine(_dir, "bad.jsonl");
        File.WriteAllLines(data, ["{\"prompt\":\"Q: Where is X? A:\",\"completion\":\" Y\"}", "{\"prompt\": 3, \"completion\": \" Y\"}"]);
        string outDir = Path.Combine(_dir, "ft");
        var err = new StringWriter();
        Assert.Equal(1, Commands.Run(["finetune", "--model", model, "--data", data, "--method", "full", "--out", outDir], err));
        Assert.Contains("bad.jsonl:2:", err.ToString());
        Assert.False(Directory.Exists(outDir));
        err = new StringWriter();
        Assert.Equal(2, Commands.Run(["finetune", "--model", model, "--data", data, "--method", "sgd", "--out", outDir], err));
        Assert.Contains("--method", err.ToString());
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void Finetune_command_saves_an_mlnet_zip_and_hf_folder_that_generate_loads()
    {
        string model = Path.Combine(_dir, "m");
        Pretrainer.Run(SmallFacts(), Tiny, model).model.Dispose();
        string data = Path.Combine(_dir, "train.csv");
        File.WriteAllLines(data, ["prompt,completion", .. QaBuilder.Build(SmallFacts(), "train").Select(p => $"\"{p.Prompt}\",\"{p.Completion}\"")]);
        string outDir = Path.Combine(_dir, "ft");
        var err = new StringWriter();
        Assert.Equal(0, Commands.Run(["finetune", "--model", model, "--data", data, "--method", "full", "--out", outDir, "--steps", "2"], err));
        foreach (var f in new[] { "model.zip", "history.csv", "hf/model.safetensors", "hf/config.json", "hf/tokenizer.json" })
            Assert.True(File.Exists(Path.Combine(outDir, f)), f);
        Assert.Equal(0, Commands.Run(["generate", "--zip", Path.Combine(outDir, "model.zip"), "--prompt", "Q: Where is X? A:"], err));
        Assert.Equal(0, Commands.Run(["generate", "--model", Path.Combine(outDir, "hf"), "--prompt", "Q: Where is X? A:"], err));
        Assert.Equal(0, Commands.Run(["evaluate", "--model", Path.Combine(outDir, "hf"), "--split", "train"], err));
        string lora = Path.Combine(_dir, "lora");
        Assert.Equal(0, Commands.Run(["finetune", "--model", model, "--data", data, "--method", "lora", "--out", lora, "--steps", "2"], err));
        Assert.True(File.Exists(Path.Combine(lora, "model.zip")));
        Assert.True(File.Exists(Path.Combine(lora, "adapter", "adapter_config.json")));
        Assert.Equal(0, Commands.Run(["generate", "--model", model, "--adapter", Path.Combine(lora, "adapter"), "--prompt", "Q: Where is X? A:"], err));
        Assert.Equal("", err.ToString());
    }

    [Fact]
    public void End_to_end_smoke_writes_report_and_plots_with_the_computed_numbers()
    {
        TorchSharp.torch.set_num_threads(1);
        var facts = SmallFacts();
        string model = Path.Combine(_dir, "m");
        Pretrainer.Run(facts, Tiny, model).model.Dispose();
        string outDir = Path.Combine(_dir, "out");
        var o = new MainJobOptions
        {
            ModelFolder = model, Facts = facts, OutFolder = outDir, Methods = ["full", "full+kl", "lora", "prompt"], Steps = 3, Seed = 2,
            SweepMethod = "full", SweepLearningRates = [1e-4, 3e-4], KlSentences = 16,
        };
        var r = Samples.Experiment.MainJob.Run(o);
        Assert.Equal(8, r.Runs.Count);
        Assert.Equal(2, r.Sweep.Count);
        var files = ReportWriter.Write(r, outDir);
        foreach (var f in new[] { "report.md", "accuracy.png", "lr_sweep.png", "loss_full.png", "loss_full_kl.png", "loss_lora.png", "loss_prompt.png" })
        {
            string p = Path.Combine(outDir, f);
            Assert.True(File.Exists(p), f);
            Assert.Contains(p, files);
            if (f.EndsWith(".png")) Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(p)[..4]);
        }
        string report = File.ReadAllText(Path.Combine(outDir, "report.md"));
        foreach (var run in r.Runs)
        {
            Assert.Contains(ReportWriter.TableRow(run), report);
            // The reported accuracy is the fraction of rows judged correct, recomputed here.
            Assert.Equal(run.TestRows.Count(x => x.Ok) / (double)facts.Test.Count, run.TestAccuracy);
            Assert.Equal(3, run.History.Count);
            Assert.True(run.DistanceFromStart > 0);
        }
        Assert.Equal(r.Runs.Single(x => x.Method == "full" && x.Init == Samples.Experiment.MainJob.Pretrained).TestAccuracy, r.Sweep[1].TestAccuracy);
        Assert.Contains($"| {1e-4.ToString("G3", System.Globalization.CultureInfo.InvariantCulture)} | {ReportWriter.Pct(r.Sweep[0].TestAccuracy)} |", report);
    }
}
