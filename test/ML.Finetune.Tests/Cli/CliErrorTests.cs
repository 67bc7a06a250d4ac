using System.Text.Json;
using ML.Finetune.Samples.Cli;
using ML.Finetune.Tests.Estimators;

namespace ML.Finetune.Tests.Cli;

/// <summary>Every failure is one `error: &lt;what&gt;, &lt;where&gt;` line with exit 1 (2 for arguments), never a stack trace.</summary>
public class CliErrorTests : IDisposable
{
    readonly string _dir = Fixtures.TempDir();
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static string[] Finetune(string model, string data, string outDir, string method, params string[] extra) =>
        ["finetune", "--model", model, "--data", data, "--method", method, "--out", outDir, .. extra.Contains("--steps") ? extra : [.. extra, "--steps", "2"]];

    string Run(params string[] args)
    {
        var r = CliRunner.InProcess(args);
        Assert.True(r.ExitCode == 0, r.ToString());
        return r.Out;
    }

    [Fact]
    public void Generate_on_a_zip_whose_base_model_moved_names_the_folder_and_how_to_point_at_it()
    {
        string model = TinyWordModel.Create(Directory.CreateDirectory(Path.Combine(_dir, "base")).FullName, seed: 7);
        string data = CliRunner.WriteData(_dir);
        string outDir = Path.Combine(_dir, "lora");
        Run(Finetune(model, data, outDir, "lora", "--rank", "2"));
        string zip = Path.Combine(outDir, "model.zip"), moved = Path.Combine(_dir, "moved-base");
        Directory.Move(model, moved);

        // A child process: the failure used to escape as TargetInvocationException with exit code 134.
        var r = CliRunner.Child(_dir, "generate", "--zip", zip, "--prompt", "where is yale");
        CliRunner.AssertError(r, 1, zip, model, "--base-model", "MLFINETUNE_BASE_MODEL_DIR");

        var ok = CliRunner.InProcess("generate", "--zip", zip, "--base-model", moved, "--prompt", "where is yale", "--max-tokens", "2");
        Assert.True(ok.ExitCode == 0, ok.ToString());
        var viaEnv = CliRunner.Child(_dir, ["generate", "--zip", zip, "--prompt", "where is yale", "--max-tokens", "2"],
            new Dictionary<string, string> { ["MLFINETUNE_BASE_MODEL_DIR"] = moved });
        Assert.True(viaEnv.ExitCode == 0, viaEnv.ToString());
        Assert.Equal(ok.Out, viaEnv.Out);
    }

    [Fact]
    public void A_non_zip_a_truncated_zip_and_a_zip_that_is_not_a_model_are_named()
    {
        string data = CliRunner.WriteData(_dir);
        string outDir = Path.Combine(_dir, "full");
        Run(Finetune(TinyWordModel.Folder, data, outDir, "full"));
        string text = Path.Combine(_dir, "notes.zip"), truncated = Path.Combine(_dir, "truncated.zip"), other = Path.Combine(_dir, "other.zip");
        File.WriteAllText(text, "not a zip at all");
        var bytes = File.ReadAllBytes(Path.Combine(outDir, "model.zip"));
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        System.IO.Compression.ZipFile.CreateFromDirectory(Path.Combine(outDir, "hf"), other);
        foreach (var zip in new[] { text, truncated })
            CliRunner.AssertError(CliRunner.Child(_dir, "generate", "--zip", zip, "--prompt", "where is yale"), 1, zip, "not a model.zip");
        CliRunner.AssertError(CliRunner.InProcess("evaluate", "--zip", other, "--data", data), 1, other, "not a model.zip");
    }

    [Fact]
    public void Divergence_is_an_error_that_tells_the_truth_about_clipping_and_writes_nothing()
    {
        string data = CliRunner.WriteData(_dir);
        string outDir = Path.Combine(_dir, "diverged");
        var r = CliRunner.Child(_dir, Finetune(TinyWordModel.Folder, data, outDir, "full", "--lr", "1e30", "--steps", "6"));
        CliRunner.AssertError(r, 1, "diverged", "--lr 1e30", "already clipped", data);
        Assert.DoesNotContain("enable gradient clipping", r.Err);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void A_malformed_jsonl_line_is_named_once_with_its_1_based_number()
    {
        string bad = Path.Combine(_dir, "bad.jsonl");
        File.WriteAllLines(bad, ["{\"prompt\":\"where is yale\",\"completion\":\"new haven\"}", "", "{\"prompt\":\"a\", \"completion\" \"b\"}"]);
        var r = CliRunner.InProcess(Finetune(TinyWordModel.Folder, bad, Path.Combine(_dir, "o"), "lora"));
        CliRunner.AssertError(r, 1, $"{bad}:3: not valid JSON");
        Assert.DoesNotContain("LineNumber", r.Err);
        File.WriteAllLines(bad, ["{\"prompt\":\"where is yale\",\"answer\":\"new haven\"}"]);
        CliRunner.AssertError(CliRunner.InProcess(Finetune(TinyWordModel.Folder, bad, Path.Combine(_dir, "o"), "lora")), 1,
            $"{bad}:1:", "\"completion\"");
        Assert.False(Directory.Exists(Path.Combine(_dir, "o")));
    }

    [Fact]
    public void A_completion_too_long_names_file_and_line_and_the_max_length_option()
    {
        // The tiny model's context is 64 tokens; the third line's completion has 70.
        string data = CliRunner.WriteData(_dir, rows:
        [
            ("where is yale", "new haven"), ("where is duke", "durham"), ("where is rice", string.Join(" ", Enumerable.Repeat("houston", 70))),
        ]);
        var r = CliRunner.InProcess(Finetune(TinyWordModel.Folder, data, Path.Combine(_dir, "o"), "lora"));
        CliRunner.AssertError(r, 1, $"{data}:3:", "70 tokens", "--max-length 64", "shorten the completion");
        // Below the context, raising --max-length is the way out.
        data = CliRunner.WriteData(_dir, rows: [("where is yale", "new haven"), ("where is rice", string.Join(" ", Enumerable.Repeat("houston", 10)))]);
        r = CliRunner.InProcess(Finetune(TinyWordModel.Folder, data, Path.Combine(_dir, "o"), "lora", "--max-length", "8"));
        CliRunner.AssertError(r, 1, $"{data}:2:", "--max-length 8", "raise --max-length");
        Assert.True(CliRunner.InProcess(Finetune(TinyWordModel.Folder, data, Path.Combine(_dir, "o"), "lora", "--max-length", "16")).ExitCode == 0);
    }

    [Fact]
    public void A_prompt_longer_than_the_context_is_cut_the_same_way_on_both_paths_and_max_tokens_counts_with_zip()
    {
        string data = CliRunner.WriteData(_dir);
        string outDir = Path.Combine(_dir, "prompt");
        Run(Finetune(TinyWordModel.Folder, data, outDir, "prompt", "--virtual-tokens", "4"));
        string longPrompt = string.Join(" ", Enumerable.Repeat("the", 100)) + " where is yale";
        var viaZip = CliRunner.InProcess("generate", "--zip", Path.Combine(outDir, "model.zip"), "--prompt", longPrompt, "--max-tokens", "3");
        var viaAdapter = CliRunner.InProcess("generate", "--model", TinyWordModel.Folder, "--adapter", Path.Combine(outDir, "adapter"), "--prompt", longPrompt,
            "--max-tokens", "3");
        foreach (var r in new[] { viaZip, viaAdapter })
        {
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains("warning: the prompt has 103 tokens", r.Err); // this tokenizer adds no bos
            Assert.Contains("4 taken by the method's virtual tokens", r.Err);
            Assert.Contains("kept its last 57 tokens", r.Err); // 64 − 4 virtual − 3 new
        }
        Assert.Equal(viaZip.Out, viaAdapter.Out);
        int Words(string s) => s.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length;
        Assert.InRange(Words(viaZip.Out), 1, 3); // the tiny random model never says eos this early

        // --max-tokens applies to --zip (it used the zip's stored 8): a full-finetuning zip and its hf/ folder agree.
        string full = Path.Combine(_dir, "full");
        Run(Finetune(TinyWordModel.Folder, data, full, "full"));
        string zipOut = Run("generate", "--zip", Path.Combine(full, "model.zip"), "--prompt", "where is yale", "--max-tokens", "12");
        Assert.Equal(Run("generate", "--model", Path.Combine(full, "hf"), "--prompt", "where is yale", "--max-tokens", "12"), zipOut);
        Assert.Equal(12, Words(zipOut));
        Assert.Equal(1, Words(Run("generate", "--zip", Path.Combine(full, "model.zip"), "--prompt", "where is yale", "--max-tokens", "1")));
    }

    [Fact]
    public void Facts_without_test_rows_are_an_error_not_zero_percent()
    {
        string facts = Path.Combine(_dir, "facts.tsv");
        File.WriteAllLines(facts, ["university\tcity\tstate\tsplit", "Yale University\tNew Haven\tConnecticut\ttrain"]);
        CliRunner.AssertError(CliRunner.InProcess("evaluate", "--model", TinyWordModel.Folder, "--facts", facts), 1, facts, "no rows with split 'test'");
        string outDir = Path.Combine(_dir, "job");
        CliRunner.AssertError(CliRunner.InProcess("--facts", facts, "--out", outDir, "--steps", "1"), 1, facts, "no rows with split 'test'");
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void Unexpected_exceptions_print_one_line_with_their_type_and_no_stack_trace()
    {
        var (message, code) = CliErrors.Describe(new System.Reflection.TargetInvocationException(new NullReferenceException("x was null")), "generate");
        Assert.Equal(1, code);
        Assert.Equal("x was null (unexpected NullReferenceException in 'generate'; MLFT_DEBUG=1 prints its stack trace)", message);
        Assert.Equal(("libtorch said no", 1), CliErrors.Describe(new IOException("libtorch said no\nException raised from foo at bar.cpp:12\nframe #0"), "finetune"));
        Assert.Equal(CliCancellation.ExitCode, CliErrors.Describe(new OperationCanceledException(), "finetune").Code);
    }

    [Fact]
    public void Evaluate_model_takes_an_adapter_and_zip_evaluation_writes_per_row_predictions()
    {
        // A main-job style model (its tokenizer adds bos, as the facts QA evaluation expects).
        var facts = Samples.Experiment.FactCorpus.Load(Samples.Cli.Commands.DefaultFacts).Take(4, 2);
        string qaModel = Path.Combine(_dir, "qa-model");
        Samples.Experiment.Pretrainer.Run(facts, new() { Seed = 3, Steps = 4, BatchSize = 8, HiddenSize = 32, Layers = 1, Heads = 2, IntermediateSize = 64 },
            qaModel).model.Dispose();
        string factsFile = Path.Combine(_dir, "facts.tsv");
        File.WriteAllLines(factsFile, ["university\tcity\tstate\tsplit", .. facts.Facts.Select(f => $"{f.University}\t{f.City}\t{f.State}\t{f.Split}")]);
        string qaData = CliRunner.WriteData(_dir, "qa.jsonl", Samples.Experiment.QaBuilder.Build(facts, "train").Select(p => (p.Prompt, p.Completion)));
        string qaOut = Path.Combine(_dir, "qa-prefix");
        Run(Finetune(qaModel, qaData, qaOut, "prefix", "--virtual-tokens", "3"));
        // evaluate --model --adapter answers with the adapter in effect: the answers generate gives with it.
        var evaluated = Run("evaluate", "--model", qaModel, "--adapter", Path.Combine(qaOut, "adapter"), "--facts", factsFile).Split('\n');
        foreach (var (f, line) in facts.Test.Zip(evaluated))
        {
            string prompt = Samples.Experiment.QaBuilder.Prompt(f.University);
            string answer = Run("generate", "--model", qaModel, "--adapter", Path.Combine(qaOut, "adapter"), "--prompt", prompt, "--max-tokens", "8").Trim();
            Assert.StartsWith($"{prompt} {answer}".TrimEnd(), line[2..]);
        }
        Assert.StartsWith("test exact match: ", evaluated[facts.Test.Count]);

        string data = CliRunner.WriteData(_dir);
        string outDir = Path.Combine(_dir, "prefix");
        Run(Finetune(TinyWordModel.Folder, data, outDir, "prefix", "--virtual-tokens", "3"));

        string predictions = Path.Combine(_dir, "pred.csv");
        string summary = Run("evaluate", "--zip", Path.Combine(outDir, "model.zip"), "--data", data, "--predictions", predictions);
        var lines = File.ReadAllLines(predictions);
        Assert.Equal("prompt,expected,generated,exact_match,nll", lines[0]);
        Assert.Equal(TinyWordModel.Facts.Length, lines.Length - 1);
        Assert.StartsWith("where is harvard,cambridge massachusetts,", lines[1]);
        // The per-row file agrees with the summary: exact-match share and the NLL of each row from the library's Score.
        int exact = lines.Skip(1).Count(l => l.Split(',')[^2] == "true");
        Assert.Contains($"exact match {Samples.Experiment.ReportWriter.Pct(exact / (double)TinyWordModel.Facts.Length)}", summary);
        var ml = new Microsoft.ML.MLContext(0);
        using var t = (Transformers.FinetuneTransformer)ml.Model.Load(Path.Combine(outDir, "model.zip"), out _);
        var scores = t.Score(TinyWordModel.Facts.Select(f => (f.Prompt, f.Completion)).ToList());
        for (int i = 0; i < scores.Count; i++)
            Assert.Equal(-scores[i].ScorePerToken, double.Parse(lines[i + 1].Split(',')[^1], System.Globalization.CultureInfo.InvariantCulture), 5);

        // An existing file is not replaced without --overwrite; the data file can never be the predictions file.
        CliRunner.AssertError(CliRunner.InProcess("evaluate", "--zip", Path.Combine(outDir, "model.zip"), "--data", data, "--predictions", predictions),
            2, predictions, "--overwrite");
        CliRunner.AssertError(CliRunner.InProcess("evaluate", "--zip", Path.Combine(outDir, "model.zip"), "--data", data, "--predictions", data, "--overwrite"),
            2, "--data");
        Assert.StartsWith("{\"prompt\"", File.ReadAllText(data));
        Assert.Empty(CliRunner.Debris(_dir));
    }
}
