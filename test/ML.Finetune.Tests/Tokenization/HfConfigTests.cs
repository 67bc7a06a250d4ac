using System.Text.Json.Nodes;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Tests.Tokenization;

/// <summary>tokenizer_config.json semantics (as transformers applies them) and refusal of what is not implemented.</summary>
public class HfConfigTests
{
    [Fact]
    public void AddBosAndEosFromConfig_ReplaceThePostProcessor()
    {
        using var dir = Issue13RegressionTests.EditedCopy("llama2", config: c => c["add_eos_token"] = true);
        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        var plain = tok.EncodeToIds("Hello world", addSpecialTokens: false);
        Assert.Equal(new[] { 1 }.Concat(plain).Append(2), tok.EncodeToIds("Hello world", addSpecialTokens: true));
        Assert.True(tok.AddBosToken);
        Assert.True(tok.AddEosToken);
        Assert.Equal(new[] { 1 }.Concat(plain), tok.Encode("Hello world")); // prompts: BOS, never EOS
    }

    [Fact]
    public void AddBosFalseInConfig_DropsTheTemplateBos()
    {
        using var dir = Issue13RegressionTests.EditedCopy("llama2", config: c => c["add_bos_token"] = false);
        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        Assert.False(tok.AddBosToken);
        Assert.Equal(tok.EncodeToIds("Hi", addSpecialTokens: false), tok.EncodeToIds("Hi", addSpecialTokens: true));
    }

    [Fact]
    public void SplitSpecialTokensFromConfig_IsTheDefault_AndCanBeOverridden()
    {
        using var dir = Issue13RegressionTests.EditedCopy("qwen3", config: c => c["split_special_tokens"] = true);
        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        Assert.True(tok.SplitSpecialTokens);
        const string typed = "<|im_start|>system";
        Assert.DoesNotContain(151644, tok.EncodeToIds(typed, addSpecialTokens: false));
        Assert.DoesNotContain(151644, tok.Tokenizer.EncodeToIds(typed));
        Assert.Equal(151644, tok.EncodeToIds(typed, addSpecialTokens: false, splitSpecialTokens: false)[0]);
        // Non-special added tokens are still matched: split_special_tokens only concerns special ones.
        Assert.Equal(151667, tok.EncodeToIds("<think>", addSpecialTokens: false).Single());
    }

    [Fact]
    public void AddedTokensDecoderFromConfig_AddsTokensWithTheirFlags()
    {
        using var dir = Issue13RegressionTests.EditedCopy("gpt2", config: c => c["added_tokens_decoder"] = new JsonObject
        {
            ["50257"] = new JsonObject { ["content"] = "<|user|>", ["special"] = true, ["lstrip"] = true, ["rstrip"] = false, ["normalized"] = false, ["single_word"] = false },
        });
        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        Assert.Equal(50258, tok.VocabSize);
        Assert.Contains(50257, tok.SpecialIds);
        Assert.Equal(new[] { 15496, 50257 }, tok.EncodeToIds("Hello   <|user|>", addSpecialTokens: false)); // lstrip absorbs the spaces
        Assert.Equal("Hello", tok.Decode(new[] { 15496, 50257 }));
    }

    [Fact]
    public void Qwen2VocabMergesFolder_UsesTheQwenPreTokenizerAndNfc()
    {
        // Qwen2Tokenizer from vocab.json + merges.txt: rebuilt from the Qwen3 tokenizer.json's model section.
        using var dir = new TempFolder();
        var src = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFixtures.Folder("qwen3"), "tokenizer.json")))!;
        File.WriteAllText(dir.File("vocab.json"), src["model"]!["vocab"]!.ToJsonString());
        File.WriteAllLines(dir.File("merges.txt"), new[] { "#version: 0.2" }.Concat(src["model"]!["merges"]!.AsArray().Select(m => $"{m![0]} {m[1]}")));
        File.Copy(Path.Combine(TokenizerFixtures.Folder("qwen3"), "tokenizer_config.json"), dir.File("tokenizer_config.json"));
        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        var reference = TokenizerFixtures.Corpus("qwen3");
        foreach (var c in reference.Cases)
            Assert.Equal(c.Ids, tok.EncodeToIds(c.Text, addSpecialTokens: false));
        Assert.Equal(151645, tok.EosId);
    }

    [Fact]
    public void VocabMergesFolder_UnknownTokenizerClass_IsRefusedNamingIt()
    {
        using var dir = Issue13RegressionTests.EditedCopy("gpt2", config: c => c["tokenizer_class"] = "RobertaTokenizer");
        var ex = Assert.Throws<NotSupportedException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains("tokenizer_class", ex.Message);
        Assert.Contains("RobertaTokenizer", ex.Message);
    }

    [Theory]
    [InlineData("normalizer", """{"type": "BertNormalizer", "lowercase": true}""", "normalizer.type")]
    [InlineData("normalizer", """{"type": "NFC", "extra": 1}""", "normalizer.extra")]
    [InlineData("pre_tokenizer", """{"type": "Punctuation", "behavior": "Isolated"}""", "pre_tokenizer.type")]
    [InlineData("decoder", """{"type": "WordPiece", "prefix": "##"}""", "decoder.type")]
    [InlineData("truncation", """{"max_length": 8}""", "truncation")]
    [InlineData("post_processor", """{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "B", "type_id": 0}}], "pair": [], "special_tokens": {}}""", "post_processor.single[0].Sequence.id")]
    public void UnimplementedValues_AreRefusedNamingTheField(string field, string json, string named)
    {
        using var dir = Issue13RegressionTests.EditedCopy("llama2", new() { [field] = JsonNode.Parse(json) });
        var ex = Assert.Throws<NotSupportedException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains(named, ex.Message);
        Assert.Contains("tokenizer.json", ex.Message);
    }

    [Theory]
    [InlineData("dropout", "0.1")]
    [InlineData("merges_extra", "1")]
    public void UnimplementedModelFields_AreRefusedNamingTheField(string field, string value)
    {
        var model = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFixtures.Folder("llama2"), "tokenizer.json")))!["model"]!.DeepClone();
        model[field] = JsonNode.Parse(value);
        using var dir = Issue13RegressionTests.EditedCopy("llama2", new() { ["model"] = model });
        var ex = Assert.Throws<NotSupportedException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains("model." + field, ex.Message);
    }

    [Fact]
    public void SplitRegexWithUnsupportedSyntax_IsRefusedNamingTheField()
    {
        using var dir = Issue13RegressionTests.EditedCopy("llama2", new()
        {
            ["pre_tokenizer"] = JsonNode.Parse("""{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{N}++"}, "behavior": "Isolated", "invert": false}]}"""),
        });
        var ex = Assert.Throws<NotSupportedException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains("pre_tokenizer.pretokenizers[0].pattern.Regex", ex.Message);
    }

    [Fact]
    public void Offsets_PointIntoTheCallersString()
    {
        var tok = HfParityTests.Load("qwen3");
        const string text = "<|im_start|>user\nHi 𝐀!<|im_end|>";
        var tokens = tok.EncodeToTokens(text);
        Assert.Equal("<|im_start|>", text[tokens[0].Offset]);
        Assert.Equal("<|im_end|>", text[tokens[^1].Offset]);
        // Contiguous cover of the text: every char belongs to the tokens in order.
        Assert.Equal(0, tokens[0].Offset.Start.Value);
        Assert.Equal(text.Length, tokens[^1].Offset.End.Value);
    }
}
