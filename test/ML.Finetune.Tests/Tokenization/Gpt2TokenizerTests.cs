using ML.Finetune.Tokenization;
using Xunit;

namespace ML.Finetune.Tests.Tokenization;

public class Gpt2TokenizerTests
{
    private static readonly CausalLMTokenizer s_gpt2 = CausalLMTokenizer.Gpt2();

    [Fact]
    public void Gpt2_EncodesKnownSentence()
    {
        var ids = s_gpt2.Encode("Hello world, where is Pennsylvania State University?");
        Assert.Equal(new[] { 15496, 995, 11, 810, 318, 9589, 1812, 2059, 30 }, ids);
    }

    [Fact]
    public void Gpt2_SpecialIdsAndVocabSize()
    {
        Assert.Equal(50256, s_gpt2.EosId);
        Assert.Equal("<|endoftext|>", s_gpt2.EosToken);
        Assert.Equal(50257, s_gpt2.VocabSize);
        Assert.False(s_gpt2.AddBosToken);
    }

    [Theory]
    [InlineData("Hello world, where is Pennsylvania State University?")]
    [InlineData("naïve café — 東京 🚀👍🏽")]
    [InlineData("  spaces\tand\nnewlines  ")]
    [InlineData("ΕΛΛΗΝΙΚΆ русский עברית العربية 😀")]
    public void Gpt2_DecodeRoundTrips(string text)
    {
        Assert.Equal(text, s_gpt2.Decode(s_gpt2.Encode(text)));
    }

    [Fact]
    public void Gpt2_DecodeSkipsEosUnlessAsked()
    {
        var ids = s_gpt2.Encode("Hi").Append(50256).ToList();
        Assert.Equal("Hi", s_gpt2.Decode(ids));
        Assert.Equal("Hi<|endoftext|>", s_gpt2.Decode(ids, skipSpecial: false));
    }

    [Fact]
    public void Gpt2_ValidateAgainstModel()
    {
        s_gpt2.ValidateAgainstModel(50257);
        s_gpt2.ValidateAgainstModel(50304);
        var ex = Assert.ThrowsAny<ArgumentException>(() => s_gpt2.ValidateAgainstModel(50000));
        Assert.Contains("50257", ex.Message);
        Assert.Contains("50000", ex.Message);
    }
}
