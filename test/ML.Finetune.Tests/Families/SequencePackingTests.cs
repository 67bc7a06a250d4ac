using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Families;

/// <summary>
/// Sequence packing through <see cref="CausalLMInput.SequenceIds"/>: several sequences in one row, each with restarting
/// position ids, give the logits each gives alone (document masking on top of causality, padding and windows).
/// </summary>
public class SequencePackingTests
{
    public static TheoryData<string> Models => new() { "tiny-llama", "tiny-gemma2", "tiny-phi3", "tiny-mistral-sw" };

    static CausalLM Load(string name) => CausalLMFactory.LoadPretrained(name switch
    {
        "tiny-llama" => Fixtures.Model(name),
        "tiny-mistral-sw" => ArchFixtures.Extra(name),
        _ => ArchFixtures.Model(name),
    });

    [Theory, MemberData(nameof(Models))]
    public void PackedRows_EqualEachSequenceRunAlone(string name)
    {
        using var scope = NewDisposeScope();
        using var m = Load(name);
        using var _ = no_grad();
        // Row 0 packs three sequences (5, 4, 3 tokens); row 1 packs two (6, 4) and ends with 2 pads.
        int[][] rows = [[5, 4, 3], [6, 4]];
        using var g = new Generator(7);
        var ids = torch.randint(3, m.Config.VocabSize, [2, 12], generator: g, dtype: ScalarType.Int64);
        var seq = torch.zeros(2, 12, dtype: ScalarType.Int64);
        var pos = torch.zeros(2, 12, dtype: ScalarType.Int64);
        var mask = torch.ones(2, 12, dtype: ScalarType.Int64);
        mask[1, 10..] = 0;
        for (int r = 0; r < 2; r++)
        {
            int start = 0;
            for (int s = 0; s < rows[r].Length; s++)
            {
                int n = rows[r][s];
                seq[r, start..(start + n)] = s;
                pos[r, start..(start + n)] = torch.arange(n);
                start += n;
            }
        }
        var packed = m.Forward(new CausalLMInput { InputIds = ids, AttentionMask = mask, PositionIds = pos, SequenceIds = seq }).Logits;
        double worst = 0;
        for (int r = 0; r < 2; r++)
        {
            int start = 0;
            foreach (var n in rows[r])
            {
                var alone = m.Forward(new CausalLMInput { InputIds = ids[r..(r + 1), start..(start + n)] }).Logits;
                worst = Math.Max(worst, Fixtures.MaxAbsDiff(packed[r..(r + 1), start..(start + n)], alone));
                start += n;
            }
        }
        Assert.True(worst < 1e-5, $"{name}: packed vs alone {worst:E2}");
        // Without the sequence ids the later sequences see the earlier ones: the test can tell.
        var unmasked = m.Forward(new CausalLMInput { InputIds = ids, AttentionMask = mask, PositionIds = pos }).Logits;
        Assert.True(Fixtures.MaxAbsDiff(unmasked[0, 5..], packed[0, 5..]) > 1e-2);
    }

    [Fact]
    public void SequenceIds_WithANonEmptyCache_IsAClearError()
    {
        using var scope = NewDisposeScope();
        using var m = Load("tiny-llama");
        using var cache = m.NewCache();
        var ids = torch.tensor(new long[] { 5, 6, 7 }).unsqueeze(0);
        m.Forward(new CausalLMInput { InputIds = ids, Cache = cache });
        var e = Assert.Throws<ArgumentException>(() => m.Forward(new CausalLMInput { InputIds = ids, Cache = cache, SequenceIds = torch.zeros_like(ids) }));
        Assert.Contains("SequenceIds", e.Message);
        Assert.Contains("cache", e.Message);
        var bad = Assert.Throws<ArgumentException>(() => m.Forward(new CausalLMInput { InputIds = ids, SequenceIds = torch.zeros(1, 2, dtype: ScalarType.Int64) }));
        Assert.Contains("SequenceIds must be int64 [1, 3]", bad.Message);
    }
}
