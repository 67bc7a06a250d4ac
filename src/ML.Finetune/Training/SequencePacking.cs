using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

/// <summary>
/// The layout of a batch whose rows hold several packed sequences (<see cref="SequencePacker"/>): per token its position
/// within its own sequence (restarting at 0) and its sequence's index within the row (pads: −1). A method passes both
/// to the model (<see cref="Models.CausalLMInput.PositionIds"/>, <see cref="Models.CausalLMInput.SequenceIds"/>), so
/// every sequence is computed as if it were alone; prompt and prefix tuning put their virtual tokens in front of each
/// sequence (see their <c>HiddenStates</c>).
/// </summary>
public sealed record SequencePacking(Tensor PositionIds, Tensor SequenceIds) : IDisposable
{
    /// <summary>The layout of right-padded rows [B, T] with these sequence lengths per row (null or one entry = one sequence).</summary>
    public static SequencePacking FromLengths(IReadOnlyList<int[]?> rows, IReadOnlyList<int> rowLengths, long width, Device? device = null)
    {
        int b = rows.Count;
        var pos = new long[b * width];
        var seq = new long[b * width];
        Array.Fill(seq, -1L);
        for (int r = 0; r < b; r++)
        {
            long at = r * width, s = 0;
            foreach (int n in rows[r] ?? [rowLengths[r]])
            {
                for (int j = 0; j < n; j++) { pos[at + j] = j; seq[at + j] = s; }
                at += n;
                s++;
            }
        }
        Tensor Make(long[] a)
        {
            var x = torch.tensor(a, new long[] { b, width });
            return device is null || device.type == DeviceType.CPU ? x : x.to(device);
        }
        return new SequencePacking(Make(pos), Make(seq));
    }

    /// <summary>Per row, the lengths of its sequences in order (read back from <see cref="SequenceIds"/>; pads are not a sequence).</summary>
    public int[][] Lengths()
    {
        long b = SequenceIds.shape[0], t = SequenceIds.shape[1];
        var seq = SequenceIds.cpu().data<long>().ToArray();
        var result = new int[b][];
        for (int r = 0; r < b; r++)
        {
            var lengths = new List<int>();
            for (long j = 0; j < t; j++)
            {
                long s = seq[r * t + j];
                if (s < 0) continue;
                if (j == 0 || seq[r * t + j - 1] != s) lengths.Add(0);
                lengths[^1]++;
            }
            result[r] = lengths.ToArray();
        }
        return result;
    }

    public void Dispose() { PositionIds.Dispose(); SequenceIds.Dispose(); }
}
