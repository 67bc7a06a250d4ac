using ML.Finetune.Samples.Cli;
using ML.Finetune.Samples.Experiment;

namespace ML.Finetune.Tests.MainJob;

/// <summary>The System.CommandLine CLI on a tiny pretrained Llama: prompt/prefix finetuning, evaluate --data, argument errors.</summary>
public class CliCommandTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("mlft-cli").FullName;
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static FactCorpus SmallFacts() =>
        FactCorpus.Load(Path.Combine(AppContext.BaseDirectory, "Data", "universities.tsv")).Take(4, 3);

    static readonly PretrainOptions Tiny = new() { Seed = 3, Steps = 6, BatchSize = 8, HiddenSize = 32, Layers = 1, Heads = 2, IntermediateSize = 64 };

    (string Model, string Data) TinyModelAndData()
    {
        TorchSharp.torch.set_num_threads(1);
        string model = Path.Combine(_dir, "m");
        Pretrainer.Run(SmallFacts(), Tiny, model).model.Dispose();
        string data = Path.Combine(_dir, "train.jsonl");
        File.WriteAllLines(data, QaBuilder.Build(SmallFacts(), "train").Select(p =>
            System.Text.Json.JsonSerializer.Serialize(new { prompt = p.Prompt, completion = p.Completion })));
        return (model, data);
    }

    [Theory]
    [InlineData("prompt", new string[0])]
    [InlineData("prefix", new[] { "--projection" })]
    public void Finetune_prompt_or_prefix_writes_zip_and_peft_adapter_that_generate_loads(string method, string[] extra)
    {
        var (model, data) = TinyModelAndData();
        string outDir = Path.Combine(_dir, method);
        var err = new StringWriter();
        Assert.Equal(0, Commands.Run(["finetune", "--model", model, "--data", data, "--method", method, "--out", outDir, "--steps", "2",
            "--virtual-tokens", "3", .. extra], err, new StringWriter()));
        Assert.Equal("", err.ToString());
        foreach (var f in new[] { "model.zip", "history.csv", "adapter/adapter_config.json", "adapter/adapter_model.safetensors" })
            Assert.True(File.Exists(Path.Combine(outDir, f)), f);
        string cfg = File.ReadAllText(Path.Combine(outDir, "adapter", "adapter_config.json"));
        Assert.Contains(method == "prompt" ? "PROMPT_TUNING" : "PREFIX_TUNING", cfg);
        Assert.Equal(3, System.Text.Json.JsonDocument.Parse(cfg).RootElement.GetProperty("num_virtual_tokens").GetInt32());
        Assert.Empty(Directory.GetDirectories(_dir, "*.tmp-*"));

        var output = new StringWriter();
        Assert.Equal(0, Commands.Run(["generate", "--zip", Path.Combine(outDir, "model.zip"), "--prompt", "Q: Where is X? A:", "--max-tokens", "2"], err, output));
        Assert.Equal(0, Commands.Run(["generate", "--model", model, "--adapter", Path.Combine(outDir, "adapter"), "--prompt", "Q: Where is X? A:",
            "--max-tokens", "2"], err, output));
        Assert.Equal("", err.ToString());
        Assert.Equal(2, output.ToString().Count(c => c == '\n')); // one (possibly empty: EOS first) answer per call
    }

    [Fact]
    public void Evaluate_data_reports_exact_match_nll_and_perplexity_of_a_model_zip()
    {
        var (model, data) = TinyModelAndData();
        string outDir = Path.Combine(_dir, "lora");
        var err = new StringWriter();
        Assert.Equal(0, Commands.Run(["finetune", "--model", model, "--data", data, "--method", "lora", "--out", outDir, "--steps", "2", "--rank", "2"],
            err, new StringWriter()));
        var output = new StringWriter();
        Assert.Equal(0, Commands.Run(["evaluate", "--zip", Path.Combine(outDir, "model.zip"), "--data", data], err, output));
        Assert.Equal("", err.ToString());
        var line = output.ToString().Trim();
        Assert.Matches(@"^\d+ rows of .*: exact match [\d.]+%, mean NLL \d+\.\d{4}, perplexity \d+\.\d{3}$", line);
        Assert.StartsWith($"{QaBuilder.Build(SmallFacts(), "train").Count} rows", line);
        // --data without --zip is a usage error; a malformed file names its line.
        err = new StringWriter();
        Assert.Equal(2, Commands.Run(["evaluate", "--data", data], err));
        Assert.Contains("--zip", err.ToString());
        string bad = Path.Combine(_dir, "bad.jsonl");
        File.WriteAllLines(bad, ["{\"prompt\":\"a\",\"completion\":\" b\"}", "not json"]);
        err = new StringWriter();
        Assert.Equal(1, Commands.Run(["evaluate", "--zip", Path.Combine(outDir, "model.zip"), "--data", bad], err));
        Assert.Contains("bad.jsonl:2:", err.ToString());
    }

    [Fact]
    public void Sweep_prints_one_table_row_per_learning_rate_and_writes_png_csv_and_best_zip()
    {
        var (model, data) = TinyModelAndData();
        string outDir = Path.Combine(_dir, "sweep");
        var err = new StringWriter();
        var output = new StringWriter();
        Assert.Equal(0, Commands.Run(["sweep", "--model", model, "--data", data, "--method", "lora", "--rank", "2", "--lrs", "1e-4,3e-3",
            "--steps", "2", "--out", outDir], err, output));
        Assert.Equal("", err.ToString());
        string text = output.ToString();
        Assert.Contains("| learning rate | validation loss | exact match |", text);
        Assert.Matches(@"\| 0\.0001 \| \d+\.\d{4} \| [\d.]+% \|", text);
        Assert.Matches(@"\| 0\.003 \| \d+\.\d{4} \| [\d.]+% \|", text);
        Assert.Single(text.Split('\n'), l => l.TrimEnd().EndsWith("| best |"));
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(Path.Combine(outDir, "lr_sweep.png"))[..4]);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(outDir, "lr_sweep.csv")).Length);
        Assert.True(File.Exists(Path.Combine(outDir, "model.zip")));
        Assert.Equal(0, Commands.Run(["generate", "--zip", Path.Combine(outDir, "model.zip"), "--prompt", "Q: Where is X? A:"], err, new StringWriter()));
        Assert.Empty(Directory.GetDirectories(_dir, "*.tmp-*"));
    }

    [Theory]
    [InlineData("finetune --model . --data {data} --method prompt --out {out} --steps 0", "'--steps'")]
    [InlineData("finetune --model . --data {data} --method prompt --out {out} --lr -1", "'--lr'")]
    [InlineData("finetune --model . --data {data} --method full --out {out} --projection", "--projection")]
    [InlineData("finetune --model . --data {data} --method lora --out {out} --virtual-tokens 4", "--virtual-tokens")]
    [InlineData("finetune --model . --data {data} --out {out}", "'--method'")]
    [InlineData("finetune --model . --data missing.jsonl --method prompt --out {out}", "file not found")]
    [InlineData("generate --prompt hi", "--model")]
    [InlineData("generate --zip {data} --model . --prompt hi", "either")]
    [InlineData("evaluate --split dev --model .", "'--split'")]
    [InlineData("bench --batch x", "'--batch'")]
    [InlineData("info --verbose", "'--verbose'")]
    [InlineData("research", "'research'")]
    [InlineData("sweep --model . --data {data} --method lora --lrs 1e-4,abc --out {out}", "'--lrs'")]
    [InlineData("sweep --model . --data {data} --method lora --lrs 1e-4", "'--out'")]
    public void Bad_arguments_give_a_clear_message_exit_2_and_write_nothing(string line, string expected)
    {
        string data = Path.Combine(_dir, "d.jsonl");
        File.WriteAllText(data, "{\"prompt\":\"a\",\"completion\":\" b\"}\n");
        string outDir = Path.Combine(_dir, "out");
        var args = line.Replace("{data}", data).Replace("{out}", outDir).Split(' ');
        var err = new StringWriter();
        Assert.Equal(2, Commands.Run(args, err, new StringWriter()));
        Assert.Contains("error: ", err.ToString());
        Assert.Contains(expected, err.ToString());
        Assert.Contains("--help", err.ToString());
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void Help_lists_every_command_and_exits_0()
    {
        var output = new StringWriter();
        Assert.Equal(0, Commands.Run(["--help"], new StringWriter(), output));
        foreach (var c in new[] { "pretrain", "finetune", "generate", "evaluate", "info", "bench", "--methods", "--no-sweep" })
            Assert.Contains(c, output.ToString());
        output = new StringWriter();
        Assert.Equal(0, Commands.Run(["finetune", "--help"], new StringWriter(), output));
        Assert.Contains("--virtual-tokens", output.ToString());
    }
}
