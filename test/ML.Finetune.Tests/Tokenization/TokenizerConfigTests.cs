using ML.Finetune.Tokenization;
using Xunit;

namespace ML.Finetune.Tests.Tokenization;

public class TokenizerConfigTests
{
    private static readonly string[] s_words = { "x", "y", "<a>", "<b>", "<c>" }; // ids 0..4, <unk> = 5

    private static TempFolder NewFolder()
    {
        var dir = new TempFolder();
        TokenizerFileWriter.WriteWordLevelTokenizerJson(dir.Path, s_words, "<unk>");
        File.Delete(dir.File("tokenizer_config.json"));
        return dir;
    }

    [Fact]
    public void SpecialIds_TokenizerConfigWinsOverEverything()
    {
        using var dir = NewFolder();
        dir.Write("tokenizer_config.json", """{"eos_token": {"content": "<a>", "special": true}}""");
        dir.Write("special_tokens_map.json", """{"eos_token": "<b>", "bos_token": "<b>"}""");
        dir.Write("config.json", """{"eos_token_id": 4, "bos_token_id": 4, "pad_token_id": 1}""");
        dir.Write("generation_config.json", """{"eos_token_id": [3, 4], "bos_token_id": 0, "pad_token_id": 0}""");

        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        Assert.Equal(2, tok.EosId);      // tokenizer_config.json
        Assert.Equal("<a>", tok.EosToken);
        Assert.Equal(3, tok.BosId);      // special_tokens_map.json
        Assert.Equal(1, tok.PadId);      // config.json
    }

    [Fact]
    public void SpecialIds_GenerationConfigIsLastResort()
    {
        using var dir = NewFolder();
        dir.Write("config.json", """{"bos_token_id": null, "eos_token_id": 4}""");
        dir.Write("generation_config.json", """{"eos_token_id": [3, 4], "bos_token_id": 0, "pad_token_id": 1}""");

        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        Assert.Equal(4, tok.EosId);
        Assert.Equal("<c>", tok.EosToken);
        Assert.Equal(0, tok.BosId);
        Assert.Equal(1, tok.PadId);
    }

    [Fact]
    public void SpecialIds_EosListTakesFirst()
    {
        using var dir = NewFolder();
        dir.Write("generation_config.json", """{"eos_token_id": [3, 4]}""");
        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        Assert.Equal(3, tok.EosId);
        Assert.Null(tok.BosId);
        Assert.Null(tok.PadId);
    }

    [Fact]
    public void SpecialToken_NotInVocab_NamesFileAndField()
    {
        using var dir = NewFolder();
        dir.Write("tokenizer_config.json", """{"pad_token": "<nope>"}""");
        var ex = Assert.Throws<InvalidDataException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains("tokenizer_config.json", ex.Message);
        Assert.Contains("pad_token", ex.Message);
    }

    [Fact]
    public void MissingFiles_ListsNamesLookedFor()
    {
        using var dir = new TempFolder();
        dir.Write("vocab.json", "{}");
        var ex = Assert.Throws<FileNotFoundException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains(dir.Path, ex.Message);
        Assert.Contains("tokenizer.json", ex.Message);
        Assert.Contains("vocab.json", ex.Message);
        Assert.Contains("merges.txt", ex.Message);
        Assert.Contains("tokenizer.model", ex.Message);
    }

    [Fact]
    public void MalformedTokenizerJson_NamesFile()
    {
        using var dir = new TempFolder();
        dir.Write("tokenizer.json", """{"model": {"type": "WordLevel", "vocab": {"a": 0,, }""");
        var ex = Assert.Throws<InvalidDataException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains(dir.File("tokenizer.json"), ex.Message);
    }

    [Fact]
    public void WrongFieldType_NamesFileAndField()
    {
        using var dir = new TempFolder();
        dir.Write("tokenizer.json", """{"model": {"type": "WordLevel", "vocab": {"a": "zero"}, "unk_token": "a"}}""");
        var ex = Assert.Throws<InvalidDataException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains("tokenizer.json", ex.Message);
        Assert.Contains("model.vocab", ex.Message);
    }

    [Fact]
    public void MalformedConfigJson_NamesFile()
    {
        using var dir = NewFolder();
        dir.Write("config.json", """{"eos_token_id": }""");
        var ex = Assert.Throws<InvalidDataException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains("config.json", ex.Message);

        dir.Write("config.json", """{"eos_token_id": "two"}""");
        ex = Assert.Throws<InvalidDataException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains("config.json", ex.Message);
        Assert.Contains("eos_token_id", ex.Message);
    }

    [Fact]
    public void VocabLargerThanModel_NamesBothSizes()
    {
        using var dir = NewFolder();
        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        Assert.Equal(6, tok.VocabSize);
        tok.ValidateAgainstModel(6);
        var ex = Assert.ThrowsAny<ArgumentException>(() => tok.ValidateAgainstModel(4));
        Assert.Contains("6", ex.Message);
        Assert.Contains("4", ex.Message);
    }
}
