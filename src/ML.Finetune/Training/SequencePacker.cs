namespace ML.Finetune.Training;

/// <summary>
/// Sequence packing: tokenized examples are concatenated into rows of at most <c>rowLength</c> tokens, so a batch
/// spends its compute on tokens instead of padding. The packed row remembers where each example starts
/// (<see cref="EncodedExample.SequenceLengths"/>); collation (<see cref="FinetuneTrainer.Collate"/>) gives every
/// example its own position ids (restarting at 0) and attention block (<see cref="SequencePacking"/>), and the first
/// label of each example is −100, so no target is predicted across a boundary. The loss and gradients of a packed
/// batch therefore equal those of the same examples unpacked.
/// <para>Rows are filled best-fit decreasing (TRL's default "bfd" strategy): examples in order of decreasing length
/// (ties in data order), each into the open row with the least room that still holds it, else a new row. This is
/// deterministic and leaves rows almost full. The trainer then shuffles rows (not examples) every epoch, as TRL
/// shuffles its packed dataset.</para>
/// </summary>
public static class SequencePacker
{
    /// <summary>
    /// Packs <paramref name="examples"/> into rows of at most <paramref name="rowLength"/> tokens. An example longer
    /// than the row is an error naming it (the encoders never produce one: they cut or split to MaxSequenceLength).
    /// </summary>
    public static IReadOnlyList<EncodedExample> Pack(IReadOnlyList<EncodedExample> examples, int rowLength)
    {
        ArgumentNullException.ThrowIfNull(examples);
        if (rowLength < 2) throw new ArgumentOutOfRangeException(nameof(rowLength), "The packed row length must be at least 2.");
        var rows = new List<List<int>>();
        var room = new List<int>();
        // Open rows by (room left, row index): the best fit for n is the first entry with room ≥ n.
        var open = new SortedSet<(int Room, int Row)>();
        var order = Enumerable.Range(0, examples.Count).OrderByDescending(i => examples[i].Length).ThenBy(i => i);
        foreach (int i in order)
        {
            var e = examples[i];
            if (e.IsPacked) throw new ArgumentException($"Example {i} is already a packed row.", nameof(examples));
            int n = e.Length;
            if (n > rowLength)
                throw new ArgumentException($"Example {i} (0-based) has {n} tokens, more than the packed row length {rowLength}.", nameof(examples));
            if (n == 0) continue;
            var fit = open.GetViewBetween((n, -1), (int.MaxValue, int.MaxValue));
            int row;
            if (fit.Count > 0)
            {
                (int r0, row) = fit.Min;
                open.Remove((r0, row));
            }
            else
            {
                row = rows.Count;
                rows.Add(new List<int>());
                room.Add(rowLength);
            }
            rows[row].Add(i);
            room[row] -= n;
            if (room[row] > 0) open.Add((room[row], row));
        }
        return rows.Select(r => Concatenate(r.Select(i => examples[i]).ToList())).ToList();
    }

    /// <summary>One row of the given examples in order; each example's first label becomes −100 (its first token is
    /// never a target: nothing before it in its own sequence predicts it).</summary>
    public static EncodedExample Concatenate(IReadOnlyList<EncodedExample> parts)
    {
        int total = parts.Sum(p => p.Length);
        var ids = new long[total];
        var labels = new long[total];
        int at = 0;
        foreach (var p in parts)
        {
            Array.Copy(p.InputIds, 0, ids, at, p.Length);
            Array.Copy(p.Labels, 0, labels, at, p.Length);
            labels[at] = FinetuneObjective.IgnoreIndex;
            at += p.Length;
        }
        return new EncodedExample(ids, labels) { SequenceLengths = parts.Select(p => p.Length).ToArray() };
    }
}
