using System.Text.Json;
using ML.Finetune.Tests.Chat;

namespace ML.Finetune.Tests.Cli;

/// <summary>
/// The CLI on the three data formats: it detects the format of .jsonl, .csv and .txt files and says so; LoRA on a JSONL of
/// conversations (a tiny Qwen2.5-templated chat model) then answers through `generate --chat` (model.zip, and the base
/// folder + the exported PEFT adapter) in the chat format, stopping at the end of turn; `evaluate` scores the replies;
/// plain-text and packed runs; errors name the file and line.
/// </summary>
public sealed class ChatCliTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("mlft-chatcli").FullName;
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static readonly string Targets = string.Join(",", ChatFinetuningTests.Targets);

    string Conversations()
    {
        string path = Path.Combine(_dir, "chats.jsonl");
        File.WriteAllLines(path, TinyChatModel.Exchanges.Select(x => $"{{\"messages\": {TinyChatModel.Json(x.User, x.Assistant)}}}"));
        return path;
    }

    static CliRunner.Result Ok(params string[] args)
    {
        var r = CliRunner.InProcess(args);
        Assert.True(r.ExitCode == 0 && r.Err == "", r.ToString());
        return r;
    }

    [Fact]
    public void Lora_OnAJsonlOfConversations_ThenGenerateChat_AnswersAndStopsAtEndOfTurn()
    {
        string model = TinyChatModel.Create(Path.Combine(_dir, "model"));
        string data = Conversations(), outDir = Path.Combine(_dir, "out");
        var train = Ok("finetune", "--model", model, "--data", data, "--method", "lora", "--out", outDir, "--steps", "40", "--lr", "1e-2",
            "--targets", Targets, "--no-progress");
        Assert.StartsWith($"data: {data}: 4 conversations (.jsonl, field \"messages\")", train.Out);
        Assert.Contains("finetuned (lora) on 4 conversations of", train.Out);

        string zip = Path.Combine(outDir, "model.zip");
        foreach (var (user, reply) in TinyChatModel.Exchanges)
            Assert.Equal(reply + "\n", Ok("generate", "--zip", zip, "--chat", "--prompt", user, "--max-tokens", "20").Out);
        // The exported PEFT adapter on the base folder answers the same; --messages takes a whole conversation.
        string messages = JsonSerializer.Serialize(new[] { new { role = "user", content = "Name a colour." } });
        Assert.Equal("Blue.\n", Ok("generate", "--model", model, "--adapter", Path.Combine(outDir, "adapter"), "--chat", "--messages", messages).Out);
        // Without --chat the same model continues raw text: the reply is not there.
        Assert.NotEqual("Blue.\n", Ok("generate", "--zip", zip, "--prompt", "Name a colour.", "--max-tokens", "4").Out);

        var eval = Ok("evaluate", "--zip", zip, "--data", data, "--predictions", Path.Combine(_dir, "p.csv"));
        Assert.Matches(@"^4 rows of .*: exact match 100\.0%, mean NLL 0\.\d{4}, perplexity 1\.\d{3}; per-row results", eval.Out.Trim());
        var csv = File.ReadAllLines(Path.Combine(_dir, "p.csv"));
        Assert.Equal("messages,expected,generated,exact_match,nll", csv[0]);
        Assert.StartsWith("\"[{\"\"role\"\":\"\"user\"\",\"\"content\"\":\"\"What is the capital of France?\"\"}]\",Paris.,Paris.,true,", csv[1]);
    }

    [Fact]
    public void The_format_is_detected_from_the_file_and_said_and_packing_trains_the_same_data()
    {
        string model = TinyChatModel.Create(Path.Combine(_dir, "model"));
        string txt = Path.Combine(_dir, "notes.txt");
        File.WriteAllText(txt, "The cat sat\non the mat.\n\n\nParis is the capital\nof France.\n   \nTwo and two make four.\n");
        var r = Ok("finetune", "--model", model, "--data", txt, "--method", "lora", "--out", Path.Combine(_dir, "txt"), "--steps", "2", "--no-progress");
        Assert.StartsWith($"data: {txt}: 3 texts (.txt, one text per paragraph)", r.Out);
        string jsonl = Path.Combine(_dir, "docs.jsonl");
        File.WriteAllLines(jsonl, ["{\"text\": \"The cat sat on the mat.\"}", "", "{\"text\": \"Two and two make four.\", \"source\": \"x\"}"]);
        r = Ok("finetune", "--model", model, "--data", jsonl, "--method", "full", "--out", Path.Combine(_dir, "jsonl"), "--steps", "2", "--packing", "--no-progress");
        Assert.StartsWith($"data: {jsonl}: 2 texts (.jsonl, field \"text\"), packed into rows of 128 tokens", r.Out);
        string csv = Path.Combine(_dir, "chats.csv");
        File.WriteAllLines(csv, ["id,messages", "1,\"[{\"\"role\"\":\"\"user\"\",\"\"content\"\":\"\"Hi\"\"},{\"\"role\"\":\"\"assistant\"\",\"\"content\"\":\"\"Hello\"\"}]\""]);
        r = Ok("finetune", "--model", model, "--data", csv, "--method", "prompt", "--out", Path.Combine(_dir, "csv"), "--steps", "2", "--packing", "--no-progress");
        Assert.StartsWith($"data: {csv}: 1 conversation (.csv, column messages), packed", r.Out);
    }

    [Fact]
    public void Data_errors_name_the_file_and_line()
    {
        string model = TinyChatModel.Create(Path.Combine(_dir, "model"));
        string bad = Path.Combine(_dir, "bad.jsonl");
        string[] Args() => ["finetune", "--model", model, "--data", bad, "--method", "lora", "--out", Path.Combine(_dir, "o")];
        File.WriteAllLines(bad, ["{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}]}",
            "{\"text\": \"plain\"}"]);
        CliRunner.AssertError(CliRunner.InProcess(Args()), 1, $"{bad}:2: this line holds texts but line 1 holds conversations");
        File.WriteAllLines(bad, ["{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}"]);
        CliRunner.AssertError(CliRunner.InProcess(Args()), 1, $"{bad}:1: the conversation has no assistant message to train on", "--all-tokens");
        File.WriteAllLines(bad, ["{\"messages\": [{\"role\": \"user\", \"content\": \"" + string.Join(" ", Enumerable.Repeat("word", 200)) + "\"}, " +
                                 "{\"role\": \"assistant\", \"content\": \"ok\"}]}"]);
        CliRunner.AssertError(CliRunner.InProcess(Args()), 1, $"{bad}:1: the conversation is ", "more than --max-length 128", "never cut");
        File.WriteAllLines(bad, ["{\"messages\": [{\"content\": \"Hi\"}]}"]);
        CliRunner.AssertError(CliRunner.InProcess(Args()), 1, $"{bad}:1: $.messages[0]: field 'role' is missing");
        File.WriteAllLines(bad, ["{\"prompt\": \"a\", \"text\": \"b\"}"]);
        CliRunner.AssertError(CliRunner.InProcess(Args()), 1, $"{bad}:1: the object has fields of more than one data format (\"prompt\", \"text\")");
        // A model without a chat template cannot train on conversations; generate --chat says the same.
        File.WriteAllLines(bad, [$"{{\"messages\": {TinyChatModel.Json("Hi", "Hello")}}}"]);
        string plain = TinyChatModel.Create(Path.Combine(_dir, "plain"));
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(plain, "tokenizer_config.json")))!.AsObject();
        config.Remove("chat_template");
        File.WriteAllText(Path.Combine(plain, "tokenizer_config.json"), config.ToJsonString());
        CliRunner.AssertError(CliRunner.InProcess(["finetune", "--model", plain, "--data", bad, "--method", "lora", "--out", Path.Combine(_dir, "o")]), 1,
            "holds conversations, but the model has no chat template");
        Assert.False(Directory.Exists(Path.Combine(_dir, "o")));
        CliRunner.AssertError(CliRunner.InProcess(["generate", "--model", model, "--chat", "--messages", "[{\"role\": 3}]"]), 2,
            "--messages: $[0].role: expected a non-empty string, got the number 3");
        CliRunner.AssertError(CliRunner.InProcess(["generate", "--model", model, "--messages", "[]"]), 2, "option '--messages' needs --chat");
    }
}
