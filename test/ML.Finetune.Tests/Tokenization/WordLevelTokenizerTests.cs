using ML.Finetune.Tokenization;
using Xunit;

namespace ML.Finetune.Tests.Tokenization;

public class WordLevelTokenizerTests
{
    private static readonly string[] s_words = { "the", "cat", "sat", "on", "mat", ".", "a", "dog" };

    private static CausalLMTokenizer WriteAndLoad(TempFolder dir, bool addBos = false)
    {
        TokenizerFileWriter.WriteWordLevelTokenizerJson(dir.Path, s_words, "<unk>", bosToken: "<s>", eosToken: "</s>", padToken: "<pad>", addBosToken: addBos);
        return CausalLMTokenizer.FromFolder(dir.Path);
    }

    [Fact]
    public void WordLevel_WriterOutputLoadsAndRoundTrips()
    {
        using var dir = new TempFolder();
        var tok = WriteAndLoad(dir);

        Assert.True(File.Exists(dir.File("tokenizer.json")));
        Assert.True(File.Exists(dir.File("tokenizer_config.json")));
        Assert.Equal("WordLevel", Assert.IsType<HfTokenizer>(tok.Tokenizer).ModelType);
        Assert.Equal(12, tok.VocabSize); // 8 words + <unk> <s> </s> <pad>
        Assert.Equal(9, tok.BosId);
        Assert.Equal(10, tok.EosId);
        Assert.Equal(11, tok.PadId);
        Assert.Equal("</s>", tok.EosToken);

        var ids = tok.Encode("the cat sat on the mat .");
        Assert.Equal(new[] { 0, 1, 2, 3, 0, 4, 5 }, ids);
        Assert.Equal("the cat sat on the mat .", tok.Decode(ids));
    }

    [Fact]
    public void WordLevel_UnknownWordsMapToUnk()
    {
        using var dir = new TempFolder();
        var tok = WriteAndLoad(dir);
        Assert.Equal(new[] { 0, 8, 2 }, tok.Encode("the zebra sat"));
        Assert.Equal("the <unk> sat", tok.Decode(new[] { 0, 8, 2 }, skipSpecial: false));
    }

    [Fact]
    public void WordLevel_SpecialTokensRecognisedAndSkipped()
    {
        using var dir = new TempFolder();
        var tok = WriteAndLoad(dir);
        var ids = tok.Encode("<s>a dog</s><pad>");
        Assert.Equal(new[] { 9, 6, 7, 10, 11 }, ids);
        Assert.Equal("a dog", tok.Decode(ids));
        Assert.Equal("<s> a dog </s> <pad>", tok.Decode(ids, skipSpecial: false));
    }

    [Fact]
    public void WordLevel_AddBosFromConfigAndParameter()
    {
        using var dir = new TempFolder();
        var tok = WriteAndLoad(dir);
        Assert.False(tok.AddBosToken);
        Assert.Equal(new[] { 9, 1 }, tok.Encode("cat", addBos: true));
        Assert.Equal(new[] { 1 }, tok.Encode("cat"));

        using var dir2 = new TempFolder();
        var tok2 = WriteAndLoad(dir2, addBos: true);
        Assert.True(tok2.AddBosToken);
        Assert.Equal(new[] { 9, 1 }, tok2.Encode("cat"));
    }

    [Fact]
    public void WordLevel_WhitespacePreTokenizerSplitsPunctuation()
    {
        using var dir = new TempFolder();
        dir.Write("tokenizer.json", """
        {"added_tokens": [], "pre_tokenizer": {"type": "Whitespace"},
         "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "!": 3, ",": 4}, "unk_token": "[UNK]"}}
        """);
        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        Assert.Equal(new[] { 1, 4, 2, 3, 0 }, tok.Encode("hello, world! there"));
    }

    [Fact]
    public void WordLevel_LowercaseNormalizerAndPostProcessorBos()
    {
        using var dir = new TempFolder();
        dir.Write("tokenizer.json", """
        {"added_tokens": [{"id": 3, "content": "[BOS]", "special": true}],
         "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
         "pre_tokenizer": {"type": "WhitespaceSplit"},
         "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "[BOS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                            "special_tokens": {"[BOS]": {"id": "[BOS]", "ids": [3], "tokens": ["[BOS]"]}}},
         "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "[BOS]": 3}, "unk_token": "[UNK]"}}
        """);
        var tok = CausalLMTokenizer.FromFolder(dir.Path);
        Assert.Equal(3, tok.BosId);
        Assert.True(tok.AddBosToken);
        Assert.Equal(new[] { 3, 1, 2 }, tok.Encode("HELLO World"));
        Assert.Equal("hello world", tok.Decode(tok.Encode("HELLO World")));
    }

    [Fact]
    public void WordLevel_TokenizerJsonHasHfShape()
    {
        using var dir = new TempFolder();
        TokenizerFileWriter.WriteWordLevelTokenizerJson(dir.Path, s_words, "<unk>", eosToken: "</s>");
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(dir.File("tokenizer.json")));
        var root = doc.RootElement;
        Assert.Equal("WordLevel", root.GetProperty("model").GetProperty("type").GetString());
        Assert.Equal("<unk>", root.GetProperty("model").GetProperty("unk_token").GetString());
        Assert.Equal(8, root.GetProperty("model").GetProperty("vocab").GetProperty("<unk>").GetInt32());
        Assert.Equal("WhitespaceSplit", root.GetProperty("pre_tokenizer").GetProperty("type").GetString());
        Assert.Equal(2, root.GetProperty("added_tokens").GetArrayLength());
        Assert.True(root.GetProperty("added_tokens")[1].GetProperty("special").GetBoolean());
    }
}
