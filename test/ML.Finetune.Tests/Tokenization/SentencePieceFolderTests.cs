using System.Text;
using ML.Finetune.Tokenization;
using Xunit;

namespace ML.Finetune.Tests.Tokenization;

public class SentencePieceFolderTests
{
    /// <summary>
    /// Hand-encodes a tiny SentencePiece BPE ModelProto: &lt;unk&gt; &lt;s&gt; &lt;/s&gt;, single characters, and every
    /// prefix of "▁hello" / "▁world" (so the score-driven merges can only grow words left to right).
    /// </summary>
    private static (byte[] Model, Dictionary<string, int> Ids) BuildModel()
    {
        var pieces = new List<(string Piece, float Score, int Type)> { ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3) };
        foreach (var c in "▁helowrd") pieces.Add((c.ToString(), -100 - pieces.Count, 1));
        foreach (var word in new[] { "▁hello", "▁world" })
            for (int len = 2; len <= word.Length; len++)
                pieces.Add((word[..len], -pieces.Count, 1));

        var model = new MemoryStream();
        foreach (var (piece, score, type) in pieces)
        {
            var p = new MemoryStream();
            WriteString(p, 1, piece);
            WriteTag(p, 2, 5); p.Write(BitConverter.GetBytes(score));
            WriteTag(p, 3, 0); WriteVarint(p, (ulong)type);
            WriteBytes(model, 1, p.ToArray());
        }
        var trainer = new MemoryStream();
        WriteTag(trainer, 3, 0); WriteVarint(trainer, 2);               // model_type = BPE
        WriteTag(trainer, 4, 0); WriteVarint(trainer, (ulong)pieces.Count); // vocab_size
        WriteTag(trainer, 40, 0); WriteVarint(trainer, 0);               // unk_id
        WriteTag(trainer, 41, 0); WriteVarint(trainer, 1);               // bos_id
        WriteTag(trainer, 42, 0); WriteVarint(trainer, 2);               // eos_id
        WriteTag(trainer, 43, 0); WriteVarint(trainer, ulong.MaxValue);  // pad_id = -1
        WriteBytes(model, 2, trainer.ToArray());
        var norm = new MemoryStream();
        WriteString(norm, 1, "identity");
        WriteTag(norm, 3, 0); WriteVarint(norm, 1);                      // add_dummy_prefix
        WriteTag(norm, 4, 0); WriteVarint(norm, 1);                      // remove_extra_whitespaces
        WriteTag(norm, 5, 0); WriteVarint(norm, 1);                      // escape_whitespaces
        WriteBytes(model, 3, norm.ToArray());

        var ids = new Dictionary<string, int>();
        for (int i = 0; i < pieces.Count; i++) ids[pieces[i].Piece] = i;
        return (model.ToArray(), ids);
    }

    private static void WriteVarint(Stream s, ulong v)
    {
        while (v >= 0x80) { s.WriteByte((byte)(v | 0x80)); v >>= 7; }
        s.WriteByte((byte)v);
    }

    private static void WriteTag(Stream s, int field, int wireType) => WriteVarint(s, (ulong)((field << 3) | wireType));

    private static void WriteBytes(Stream s, int field, byte[] data)
    {
        WriteTag(s, field, 2);
        WriteVarint(s, (ulong)data.Length);
        s.Write(data);
    }

    private static void WriteString(Stream s, int field, string value) => WriteBytes(s, field, Encoding.UTF8.GetBytes(value));

    [Fact]
    public void TokenizerModel_LoadsWithLlamaStyleBos()
    {
        using var dir = new TempFolder();
        var (model, ids) = BuildModel();
        File.WriteAllBytes(dir.File("tokenizer.model"), model);

        var tok = CausalLMTokenizer.FromFolder(dir.Path);

        Assert.EndsWith("tokenizer.model", tok.Source);
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.True(tok.AddBosToken);
        Assert.Equal(ids.Count, tok.VocabSize);
        var encoded = tok.Encode("hello world");
        Assert.Equal(new[] { 1, ids["▁hello"], ids["▁world"] }, encoded);
        Assert.Equal("hello world", tok.Decode(encoded));
    }

    [Fact]
    public void TokenizerModel_ConfigOverridesAddBos()
    {
        using var dir = new TempFolder();
        File.WriteAllBytes(dir.File("tokenizer.model"), BuildModel().Model);
        dir.Write("tokenizer_config.json", """{"add_bos_token": false, "eos_token": "</s>", "pad_token": "<unk>"}""");

        var tok = CausalLMTokenizer.FromFolder(dir.Path);

        Assert.False(tok.AddBosToken);
        Assert.Equal(0, tok.PadId);
        Assert.Equal("</s>", tok.EosToken);
        Assert.DoesNotContain(1, tok.Encode("hello"));
    }
}
