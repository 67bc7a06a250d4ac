using ML.Finetune.Tokenization;
using Xunit;

namespace ML.Finetune.Tests.Tokenization;

public class BpeFolderTests
{
    private static readonly CausalLMTokenizer s_gpt2 = CausalLMTokenizer.Gpt2();

    private static void AssertSameAsTiktoken(CausalLMTokenizer tok)
    {
        foreach (var s in Gpt2TestData.Samples)
        {
            Assert.Equal(s_gpt2.Encode(s), tok.Encode(s));
            Assert.Equal(s, tok.Decode(tok.Encode(s)));
        }
    }

    [Fact]
    public void VocabJsonAndMerges_MatchTiktokenIds()
    {
        using var dir = new TempFolder();
        var vocab = new Dictionary<string, int>(Gpt2TestData.Vocab) { [Gpt2TestData.EndOfText] = Gpt2TestData.EndOfTextId };
        TokenizerFileWriter.WriteByteLevelBpeFiles(dir.Path, vocab, Gpt2TestData.Merges);
        dir.Write("tokenizer_config.json", """{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": false}""");

        var tok = CausalLMTokenizer.FromFolder(dir.Path);

        Assert.Equal(50257, tok.VocabSize);
        Assert.Equal(50256, tok.EosId);
        Assert.Equal("<|endoftext|>", tok.EosToken);
        AssertSameAsTiktoken(tok);
        Assert.Equal(new[] { 15496, 50256 }, tok.Encode("Hello<|endoftext|>"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TokenizerJsonBpe_MatchesVocabJsonPath(bool arrayMerges)
    {
        using var dir = new TempFolder();
        Gpt2TestData.WriteTokenizerJson(dir.File("tokenizer.json"), arrayMerges);

        var tok = CausalLMTokenizer.FromFolder(dir.Path);

        Assert.EndsWith("tokenizer.json", tok.Source);
        Assert.Equal(50257, tok.VocabSize);
        Assert.Contains(50256, tok.SpecialIds);
        AssertSameAsTiktoken(tok);
        Assert.Equal("Hi", tok.Decode(new[] { 17250, 50256 }));
        Assert.Equal("Hi<|endoftext|>", tok.Decode(new[] { 17250, 50256 }, skipSpecial: false));
    }

    [Fact]
    public void TokenizerJsonBpe_SplitRegexThenByteLevel_MatchesTiktoken()
    {
        using var dir = new TempFolder();
        Gpt2TestData.WriteTokenizerJson(dir.File("tokenizer.json"), arrayMerges: false, splitThenByteLevel: true);
        AssertSameAsTiktoken(CausalLMTokenizer.FromFolder(dir.Path));
    }

    [Fact]
    public void TokenizerJson_SmallHandWrittenBpe()
    {
        using var dir = new TempFolder();
        // Byte-level alphabet: 'Ġ' is the space byte.
        dir.Write("tokenizer.json", """
        {
          "added_tokens": [ { "id": 9, "content": "<eos>", "special": true } ],
          "normalizer": null,
          "pre_tokenizer": { "type": "ByteLevel", "add_prefix_space": false, "use_regex": true },
          "decoder": { "type": "ByteLevel" },
          "model": {
            "type": "BPE",
            "vocab": { "a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "abc": 5, "Ġa": 6, "Ġab": 7, "Ġabc": 8 },
            "merges": [ "Ġ a", "Ġa b", ["Ġab", "c"], "a b", ["ab", "c"] ]
          }
        }
        """);
        dir.Write("config.json", """{"eos_token_id": 9, "vocab_size": 10}""");

        var tok = CausalLMTokenizer.FromFolder(dir.Path);

        Assert.Equal(new[] { 5, 8, 3, 1 }, tok.Encode("abc abc b"));
        Assert.Equal(new[] { 4, 9 }, tok.Encode("ab<eos>"));
        Assert.Equal(9, tok.EosId);
        Assert.Equal("<eos>", tok.EosToken);
        Assert.Equal(10, tok.VocabSize);
        Assert.Equal("abc abc b", tok.Decode(tok.Encode("abc abc b")));
        tok.ValidateAgainstModel(10);
        Assert.Throws<ArgumentException>(() => tok.ValidateAgainstModel(9));
    }

    [Fact]
    public void TokenizerJson_UnsupportedModelType_NamesFileAndType()
    {
        using var dir = new TempFolder();
        dir.Write("tokenizer.json", """{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}""");
        var ex = Assert.Throws<NotSupportedException>(() => CausalLMTokenizer.FromFolder(dir.Path));
        Assert.Contains("Unigram", ex.Message);
        Assert.Contains(dir.File("tokenizer.json"), ex.Message);
    }
}
