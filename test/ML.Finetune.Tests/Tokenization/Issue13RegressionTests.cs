using System.Text.Json.Nodes;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;

namespace ML.Finetune.Tests.Tokenization;

/// <summary>The five wrong tokenizations of issue #13, each on the real files against HF's reference ids.</summary>
public class Issue13RegressionTests
{
    private static int[] Reference(string family, string text) =>
        TokenizerFixtures.Corpus(family).Cases.Single(c => c.Text == text).Ids;

    /// <summary>A copy of a fixture folder with top-level tokenizer.json fields replaced and/or tokenizer_config.json edited.</summary>
    internal static TempFolder EditedCopy(string family, Dictionary<string, JsonNode?>? tokenizerJson = null, Action<JsonObject>? config = null)
    {
        var dir = new TempFolder();
        foreach (var f in Directory.GetFiles(TokenizerFixtures.Folder(family))) File.Copy(f, dir.File(Path.GetFileName(f)));
        if (tokenizerJson is not null) TokenizerFixtures.EditTokenizerJson(dir.File("tokenizer.json"), tokenizerJson);
        if (config is not null)
        {
            string cfg = dir.File("tokenizer_config.json");
            var node = File.Exists(cfg) ? JsonNode.Parse(File.ReadAllText(cfg))!.AsObject() : new JsonObject();
            config(node);
            File.WriteAllText(cfg, node.ToJsonString());
        }
        return dir;
    }

    [Fact]
    public void Bug1_Llama3_IgnoreMerges_WholeWordsInTheVocabularyAreOneToken()
    {
        var texts = new[] { "Những người đó đã đến đây", "Tiếng Việt có dấu: Xin chào các bạn, tôi là người Việt Nam.",
            "Русский: здравствуйте, до свидания", "Türkçe: İstanbul'da ığdır şehir", "فارسی: سلام دنیا، من فارسی صحبت می‌کنم" };
        var tok = HfParityTests.Load("llama3");
        foreach (var t in texts) Assert.Equal(Reference("llama3", t), tok.EncodeToIds(t, addSpecialTokens: false));

        // Without ignore_merges (what the old loader did) BPE splits some of these words: the references above need it.
        using var dir = EditedCopy("llama3");
        string tj = dir.File("tokenizer.json");
        File.WriteAllText(tj, File.ReadAllText(tj).Replace("\"ignore_merges\": true", "\"ignore_merges\": false", StringComparison.Ordinal));
        var mergesOnly = CausalLMTokenizer.FromFolder(dir.Path);
        Assert.Contains(texts, t => !mergesOnly.EncodeToIds(t, addSpecialTokens: false).SequenceEqual(Reference("llama3", t)));
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    [InlineData("qwen3")]
    public void Bug2_SupplementaryPlaneLettersAndDigits_PreTokenizeAsHf(string family)
    {
        var tok = HfParityTests.Load(family);
        foreach (var t in new[] { "𝐈'll be there", "𝐈's 𝐈'm 𝐈'd 𝐈've", "x𝐀's", "Hello𝐖orld's", "a 𝐛 c", "x 𝟏𝟐𝟑𝟒𝟓", "a𠀀b 𠀀 c", " 𝐱" })
            Assert.Equal(Reference(family, t), tok.EncodeToIds(t, addSpecialTokens: false));
    }

    [Fact]
    public void Bug2_Gpt2Builtin_SupplementaryPlaneLetters()
    {
        var tok = CausalLMTokenizer.Gpt2();
        foreach (var t in new[] { "𝐈'll be there", "𝐈's 𝐈'm 𝐈'd 𝐈've", "x𝐀's" })
            Assert.Equal(Reference("gpt2", t), tok.Encode(t));
        // "'ll" after a supplementary-plane letter is its own contraction pre-token (one id), as after "I".
        Assert.Equal(tok.Encode("I'll")[^1], tok.Encode("𝐈'll")[^1]);
    }

    [Fact]
    public void Bug3_Qwen3_NonSpecialAddedTokensAreText()
    {
        var tok = HfParityTests.Load("qwen3");
        int think = tok.TokenToId("<think>")!.Value, imEnd = tok.TokenToId("<|im_end|>")!.Value;
        Assert.Equal(151667, think);
        Assert.DoesNotContain(think, tok.SpecialIds);
        Assert.DoesNotContain(tok.TokenToId("<tool_call>")!.Value, tok.SpecialIds);
        Assert.Contains(imEnd, tok.SpecialIds);
        var ids = tok.EncodeToIds("<think>\nplan\n</think>\n\nanswer<|im_end|>", addSpecialTokens: false);
        Assert.Equal(think, ids[0]);
        Assert.Equal("<think>\nplan\n</think>\n\nanswer", tok.Decode(ids));                 // default: special tokens skipped, text kept
        Assert.Equal("<think>\nplan\n</think>\n\nanswer<|im_end|>", tok.Decode(ids, skipSpecial: false));
    }

    [Theory]
    [InlineData("llama2")]
    [InlineData("llama2-metaspace")]
    public void Bug4_SentencePieceStyleTokenizerJson_LoadsWithoutTokenizerModel(string family)
    {
        Assert.False(File.Exists(Path.Combine(TokenizerFixtures.Folder(family), "tokenizer.model")));
        var tok = HfParityTests.Load(family);
        Assert.IsType<HfTokenizer>(tok.Tokenizer);
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.True(tok.AddBosToken);
        foreach (var t in new[] { "Hello world", "☃ snowman", "𓀀 hieroglyph", "  both  ", "</s>Hello" })
        {
            var c = TokenizerFixtures.Corpus(family).Cases.Single(x => x.Text == t);
            Assert.Equal(c.IdsSpecial, tok.EncodeToIds(t, addSpecialTokens: true));
            Assert.Equal(c.Decoded, tok.Decode(c.IdsSpecial, skipSpecial: false));
        }
        // Byte fallback: "𓀀" (U+13000) is not in the vocabulary, so it is its four UTF-8 bytes.
        var glyph = tok.EncodeToIds("𓀀", addSpecialTokens: false).Select(i => tok.IdToToken(i)).ToArray();
        Assert.Equal(new[] { "▁", "<0xF0>", "<0x93>", "<0x80>", "<0x80>" }, glyph);
        Assert.Equal("𓀀", tok.Decode(tok.EncodeToIds("𓀀", addSpecialTokens: true)));
    }

    [Fact]
    public void Bug5_Gpt2VocabFolderWithPlainConfig_EndOfTextIsTheSpecialToken()
    {
        string folder = TokenizerFixtures.Folder("gpt2");
        Assert.Equal("""{"model_max_length":1024}""", File.ReadAllText(Path.Combine(folder, "tokenizer_config.json")));
        var tok = HfParityTests.Load("gpt2");
        Assert.Equal(50256, tok.EosId);
        Assert.Equal(50256, tok.BosId);
        Assert.Equal("<|endoftext|>", tok.EosToken);
        Assert.Equal(new[] { 15496, 50256 }, tok.EncodeToIds("Hello<|endoftext|>", addSpecialTokens: false));
        Assert.Equal(Reference("gpt2", "Hello<|endoftext|>"), tok.EncodeToIds("Hello<|endoftext|>", addSpecialTokens: false));
        Assert.Equal("Hello", tok.Decode(new[] { 15496, 50256 }));
        // Untrusted text keeps it as text.
        Assert.Equal(7, tok.EncodeToIds("<|endoftext|>", addSpecialTokens: false, splitSpecialTokens: true).Count);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    [InlineData("llama3.1")]
    [InlineData("qwen3")]
    [InlineData("llama2")]
    public void ExampleEncoder_PromptGetsTheTemplatePrefix_CompletionNoBosAndTheConfigEos(string family)
    {
        var tok = HfParityTests.Load(family);
        var enc = new ExampleEncoder(tok, 512);
        var ex = enc.Encode("Question: who?", " Answer.");
        var prompt = tok.EncodeToIds("Question: who?", addSpecialTokens: true).ToList();
        if (tok.AddEosToken) prompt.RemoveAt(prompt.Count - 1);
        var completion = tok.EncodeToIds(" Answer.", addSpecialTokens: false);
        Assert.Equal(prompt.Concat(completion).Append(tok.EosId!.Value).Select(i => (long)i), ex.InputIds);
        int expectedEos = family switch { "gpt2" => 50256, "llama3" => 128001, "llama3.1" => 128009, "qwen3" => 151645, _ => 2 };
        Assert.Equal(expectedEos, tok.EosId);
        Assert.Equal(family is "llama3.1" or "llama2", ex.InputIds[0] == tok.BosId);
    }
}
