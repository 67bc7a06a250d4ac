using System.Collections.Concurrent;
using System.Text;

namespace ML.Finetune.Tokenization;

/// <summary>A token the model produced for a pre-token: its id and its [Start, End) chars in that pre-token.</summary>
internal readonly record struct ModelToken(int Id, int Start, int End);

/// <summary>An HF model (BPE, WordLevel): turns one pre-token into ids.</summary>
internal abstract class HfModel
{
    protected HfModel(IReadOnlyDictionary<string, int> vocab)
    {
        Vocab = vocab;
        int max = vocab.Count == 0 ? -1 : vocab.Values.Max();
        IdToTokenTable = new string?[max + 1];
        foreach (var kv in vocab) IdToTokenTable[kv.Value] = kv.Key;
    }

    public IReadOnlyDictionary<string, int> Vocab { get; }
    protected string?[] IdToTokenTable { get; }
    public int IdCount => IdToTokenTable.Length;
    /// <summary>The id this model emits for what its vocabulary cannot represent, or null when it has none (byte-level BPE).</summary>
    public virtual int? UnknownId => null;

    public abstract void Tokenize(string word, List<ModelToken> output);
    public int? TokenToId(string token) => Vocab.TryGetValue(token, out int id) ? id : null;
    public string? IdToToken(int id) => (uint)id < (uint)IdToTokenTable.Length ? IdToTokenTable[id] : null;
}

/// <summary>HF WordLevel: the whole pre-token is one id, or the unknown token's.</summary>
internal sealed class WordLevelModel(IReadOnlyDictionary<string, int> vocab, int unkId) : HfModel(vocab)
{
    public override int? UnknownId => unkId;
    public override void Tokenize(string word, List<ModelToken> output) =>
        output.Add(new ModelToken(Vocab.TryGetValue(word, out int id) ? id : unkId, 0, word.Length));
}

/// <summary>Options of an HF BPE model beyond vocab and merges.</summary>
internal sealed record BpeOptionsHf(string? UnkToken = null, bool FuseUnk = false, bool ByteFallback = false,
    bool IgnoreMerges = false, string? ContinuingSubwordPrefix = null, string? EndOfWordSuffix = null);

/// <summary>
/// HF BPE: characters (with optional subword prefix/suffix, byte-fallback &lt;0xNN&gt; tokens or the unknown token),
/// then merges applied lowest rank first, leftmost first among equal ranks; with ignore_merges a pre-token that is
/// itself in the vocabulary is one token. Results are cached per pre-token.
/// </summary>
internal sealed class BpeModel : HfModel
{
    private const int CacheCapacity = 200_000;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly BpeOptionsHf _o;
    private readonly int _unkId = -1;
    public override int? UnknownId => _unkId >= 0 ? _unkId : null;
    private readonly int[]? _byteIds;
    private readonly ConcurrentDictionary<string, ModelToken[]> _cache = new(StringComparer.Ordinal);
    private int _cached;

    /// <param name="merges">Merges in rank order; a later duplicate of a pair overrides the earlier one, as in HF.</param>
    public BpeModel(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, BpeOptionsHf options,
        Func<int, string> mergeField)
        : base(vocab)
    {
        _o = options;
        if (options.UnkToken is { } unk && !vocab.TryGetValue(unk, out _unkId))
            throw new InvalidDataException($"unk_token '{unk}' is not in the vocabulary.");
        if (options.ByteFallback)
        {
            _byteIds = new int[256];
            for (int b = 0; b < 256; b++) _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        }
        int prefixLen = options.ContinuingSubwordPrefix?.Length ?? 0;
        _merges = new Dictionary<long, (int, int)>(merges.Count);
        for (int i = 0; i < merges.Count; i++)
        {
            var (a, b) = merges[i];
            if (!vocab.TryGetValue(a, out int aId)) throw new InvalidDataException($"{mergeField(i)}: token '{a}' is not in the vocabulary.");
            if (!vocab.TryGetValue(b, out int bId)) throw new InvalidDataException($"{mergeField(i)}: token '{b}' is not in the vocabulary.");
            string merged = a + (b.Length >= prefixLen ? b[prefixLen..] : b);
            if (!vocab.TryGetValue(merged, out int newId)) throw new InvalidDataException($"{mergeField(i)}: merged token '{merged}' is not in the vocabulary.");
            _merges[Key(aId, bId)] = (i, newId);
        }
    }

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    public override void Tokenize(string word, List<ModelToken> output)
    {
        if (word.Length == 0) return;
        if (_o.IgnoreMerges && Vocab.TryGetValue(word, out int whole)) { output.Add(new ModelToken(whole, 0, word.Length)); return; }
        if (!_cache.TryGetValue(word, out var tokens))
        {
            tokens = Merge(word);
            if (_cached < CacheCapacity && _cache.TryAdd(word, tokens)) Interlocked.Increment(ref _cached);
        }
        output.AddRange(tokens);
    }

    private ModelToken[] Merge(string word)
    {
        var ids = new List<int>(word.Length);
        var starts = new List<int>(word.Length);
        var ends = new List<int>(word.Length);
        (int Id, int Start, int End)? unk = null;
        Span<byte> bytes = stackalloc byte[64];
        for (int i = 0; i < word.Length;)
        {
            int n = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            string s = word.Substring(i, n);
            if (i > 0 && _o.ContinuingSubwordPrefix is { } prefix) s = prefix + s;
            if (i + n == word.Length && _o.EndOfWordSuffix is { } suffix) s += suffix;
            if (Vocab.TryGetValue(s, out int id))
            {
                if (unk is { } u) { ids.Add(u.Id); starts.Add(u.Start); ends.Add(u.End); unk = null; }
                ids.Add(id); starts.Add(i); ends.Add(i + n);
            }
            else if (_byteIds is not null && TryBytes(s, bytes, out int count))
            {
                for (int k = 0; k < count; k++) { ids.Add(_byteIds[bytes[k]]); starts.Add(i); ends.Add(i + n); }
            }
            else if (_unkId >= 0)
            {
                if (unk is { } u && _o.FuseUnk) unk = (u.Id, u.Start, i + n);
                else
                {
                    if (unk is { } prev) { ids.Add(prev.Id); starts.Add(prev.Start); ends.Add(prev.End); }
                    unk = (_unkId, i, i + n);
                }
            }
            i += n;
        }
        if (unk is { } last) { ids.Add(last.Id); starts.Add(last.Start); ends.Add(last.End); }
        return MergeAll(ids, starts, ends);
    }

    private bool TryBytes(string s, Span<byte> buffer, out int count)
    {
        count = Encoding.UTF8.GetBytes(s, buffer);
        for (int k = 0; k < count; k++) if (_byteIds![buffer[k]] < 0) return false;
        return true;
    }

    private ModelToken[] MergeAll(List<int> ids, List<int> starts, List<int> ends)
    {
        int n = ids.Count;
        var id = ids.ToArray();
        var end = ends.ToArray();
        var next = new int[n];
        var prev = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; alive[i] = true; }
        if (n > 1)
        {
            var queue = new PriorityQueue<(int Pos, int NewId), long>();
            for (int i = 0; i + 1 < n; i++)
                if (_merges.TryGetValue(Key(id[i], id[i + 1]), out var m)) queue.Enqueue((i, m.NewId), ((long)m.Rank << 32) | (uint)i);
            while (queue.TryDequeue(out var top, out _))
            {
                int pos = top.Pos;
                if (!alive[pos] || next[pos] < 0) continue;
                int right = next[pos];
                if (!_merges.TryGetValue(Key(id[pos], id[right]), out var cur) || cur.NewId != top.NewId) continue;
                id[pos] = top.NewId;
                end[pos] = end[right];
                alive[right] = false;
                next[pos] = next[right];
                if (next[right] >= 0) prev[next[right]] = pos;
                if (prev[pos] >= 0 && _merges.TryGetValue(Key(id[prev[pos]], id[pos]), out var left))
                    queue.Enqueue((prev[pos], left.NewId), ((long)left.Rank << 32) | (uint)prev[pos]);
                if (next[pos] >= 0 && _merges.TryGetValue(Key(id[pos], id[next[pos]]), out var after))
                    queue.Enqueue((pos, after.NewId), ((long)after.Rank << 32) | (uint)pos);
            }
        }
        var result = new List<ModelToken>(n);
        for (int i = 0; i < n; i++) if (alive[i]) result.Add(new ModelToken(id[i], starts[i], end[i]));
        return result.ToArray();
    }
}
