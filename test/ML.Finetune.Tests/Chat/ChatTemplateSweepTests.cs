using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using ML.Finetune.Chat;
using ML.Finetune.Chat.Jinja;
using Xunit.Abstractions;

namespace ML.Finetune.Tests.Chat;

/// <summary>
/// A broad sweep over every other real chat template found in llama.cpp's models/templates, openvino.genai's copy of
/// ~170 hub tokenizer configs, and ollama's template index (Fixtures/sweep/). Each render must equal transformers'
/// output (compared by SHA-256), fail the way jinja2 failed, or stop with a "not implemented" error naming the
/// construct: never different text.
/// </summary>
public class ChatTemplateSweepTests
{
    private readonly ITestOutputHelper _output;

    public ChatTemplateSweepTests(ITestOutputHelper output) => _output = output;

    [Fact]
    public void EveryTemplateRendersLikeTransformersOrSaysWhatIsMissing()
    {
        var templates = ChatFixtures.Json("sweep", "templates.json")["templates"]!.AsArray().ToDictionary(t => (string)t!["id"]!, t => t!.AsObject());
        var expected = ChatFixtures.Json("sweep", "expected.json")["templates"]!.AsArray();
        int equal = 0, sameError = 0, notImplementedRenders = 0;
        var wrong = new List<string>();
        var notImplementedTemplates = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var fullyEqualTemplates = 0;
        foreach (var entry in expected)
        {
            string id = (string)entry!["id"]!;
            if (entry["load_error"] is not null) continue;
            var source = templates[id];
            ChatTemplate? template = null;
            JinjaException? parseError = null;
            try
            {
                template = new ChatTemplate((string)source["chat_template"]!, ChatFixtures.StringMap(entry["special_tokens_map"]));
            }
            catch (JinjaException e)
            {
                parseError = e; // jinja2 fails to compile it too (checked per render below), or it is not implemented
            }
            bool allEqual = true;
            foreach (var r in entry["renders"]!.AsArray())
            {
                string conversation = (string)r!["conversation"]!;
                bool addGenerationPrompt = (bool)r["add_generation_prompt"]!;
                string? actual = null;
                Exception? error = null;
                try
                {
                    actual = template?.Render(ChatFixtures.Messages(conversation), addGenerationPrompt, ChatFixtures.Options(conversation, null));
                }
                catch (JinjaException e)
                {
                    error = e;
                }
                error ??= parseError;
                string label = $"{id} [{conversation}, add_generation_prompt={addGenerationPrompt}]";
                if (error is JinjaNotImplementedException ni)
                {
                    notImplementedRenders++;
                    notImplementedTemplates.TryAdd(id, ni.Message);
                    allEqual = false;
                }
                else if (r["sha256"] is { } hash)
                {
                    if (actual is not null && Sha256(actual) == (string)hash!) equal++;
                    else
                    {
                        wrong.Add(error is null ? $"{label}: different text ({actual!.Length} chars, expected {(int)r["length"]!})" : $"{label}: threw {error.Message}");
                        allEqual = false;
                    }
                }
                else if (ChatFixtures.CheckError(r["error"]!, error) is { } problem)
                {
                    wrong.Add($"{label}: {problem}");
                    allEqual = false;
                }
                else sameError++;
            }
            if (allEqual) fullyEqualTemplates++;
        }
        _output.WriteLine($"{expected.Count} templates: {fullyEqualTemplates} render every conversation like transformers; " +
                          $"{equal} renders equal, {sameError} fail as jinja2 fails, {notImplementedRenders} stop at a construct not implemented.");
        foreach (var kv in notImplementedTemplates) _output.WriteLine($"  not implemented in {kv.Key}: {kv.Value}");
        Assert.True(wrong.Count == 0, $"{wrong.Count} renders differ from transformers:\n" + string.Join("\n", wrong.Take(40)));
        Assert.True(equal > 1000, $"only {equal} renders compared equal");
    }

    // render_references.py keeps the first 16 hex digits (64 bits) of the SHA-256.
    private static string Sha256(string text) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16].ToLowerInvariant();
}
