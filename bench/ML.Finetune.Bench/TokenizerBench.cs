using System.Diagnostics;
using System.Text;
using System.Text.Json;
using ML.Finetune.Tests.Tokenization;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Bench;

/// <summary>
/// --tokenizer: correctness of our tokenizers and of Tokenizers.DotNet (HF's Rust tokenizers, native) against the
/// stored HF references (corpus + fuzz, every family), then encode throughput on ~10 MB of mixed text, next to the
/// model's training tokens/s. Usage: bench/README.md.
/// </summary>
internal static class TokenizerBench
{
    public static int Run(string[] args)
    {
        string fixtures = "test/ML.Finetune.Tests/Fixtures/tokenizers";
        string? textFile = null, writeText = null, trainingJson = null;
        double mb = 10;
        string[] families = TokenizerFixtures.Families;
        for (int i = 1; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--fixtures": fixtures = Next(); break;
                case "--text": textFile = Next(); break;
                case "--write-text": writeText = Next(); break;
                case "--mb": mb = double.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                case "--families": families = Next().Split(','); break;
                case "--training-json": trainingJson = Next(); break;
                default: throw new ArgumentException($"unknown option {args[i]}");
            }
        }
        TokenizerFixtures.Root = Path.GetFullPath(fixtures);
        Console.WriteLine($"Tokenizer bench: {Environment.ProcessorCount} CPUs, load avg {File.ReadAllText("/proc/loadavg").Trim()}, " +
                          $"Tokenizers.DotNet {typeof(Tokenizers.DotNet.Tokenizer).Assembly.GetName().Version}");

        var lines = textFile is not null ? File.ReadAllLines(textFile) : MixedText(mb);
        if (writeText is not null) { File.WriteAllLines(writeText, lines); Console.WriteLine($"wrote {writeText}"); }
        long chars = lines.Sum(l => (long)l.Length + 1);
        long bytes = lines.Sum(l => (long)Encoding.UTF8.GetByteCount(l) + 1);
        Console.WriteLine($"text: {lines.Length:N0} lines, {bytes / 1e6:F1} MB UTF-8 ({chars:N0} chars)");
        Console.WriteLine();
        Console.WriteLine("tok/s: 1st pass (fresh tokenizer, cold BPE cache) / 2nd pass, 1 thread; then the 3rd pass on all threads.");
        Console.WriteLine("| family | strings | ours: ids / decode mismatches | Tokenizers.DotNet: ids / decode mismatches | ours load s | ours tok/s 1st / 2nd | ours all threads | Tokenizers.DotNet tok/s 1st / 2nd |");
        Console.WriteLine("|---|---:|---|---|---:|---:|---:|---:|");
        foreach (var family in families)
        {
            var sw = Stopwatch.StartNew();
            var ours = CausalLMTokenizer.FromFolder(TokenizerFixtures.Folder(family));
            double load = sw.Elapsed.TotalSeconds;
            string tj = Path.Combine(TokenizerFixtures.Folder(family), "tokenizer.json");
            using var native = File.Exists(tj) ? new Tokenizers.DotNet.Tokenizer(vocabPath: tj) : null;
            // Throughput first, on fresh tokenizers (the correctness pass would warm the caches).
            Func<string, int> oursEncode = l => ours.EncodeToIds(l, addSpecialTokens: false).Count;
            double cold = Throughput(lines, oursEncode, parallel: false), warm = Throughput(lines, oursEncode, parallel: false);
            double par = Throughput(lines, oursEncode, parallel: true);
            string nat = native is null ? "n/a" : $"{Throughput(lines, l => native.Encode(l).Length, false):N0} / {Throughput(lines, l => native.Encode(l).Length, false):N0}";
            var (strings, oursIds, oursDec) = Correctness(family, ours, null);
            string nativeCol = native is null ? "n/a (no tokenizer.json)" : Fmt(Correctness(family, ours, native));
            Console.WriteLine($"| {family} | {strings:N0} | {oursIds} / {oursDec} | {nativeCol} | {load:F1} | {cold:N0} / {warm:N0} | {par:N0} | {nat} |");
        }
        if (trainingJson is not null) PrintTraining(trainingJson);
        return 0;
    }

    private static string Fmt((int Strings, int Ids, int Decode) r) => $"{r.Ids} / {r.Decode}";

    /// <summary>
    /// Mismatches against the stored HF references. Ours: ids with and without special tokens, split special tokens,
    /// decode keeping and skipping. Tokenizers.DotNet only offers encode with special tokens and decode skipping them.
    /// </summary>
    private static (int Strings, int Ids, int Decode) Correctness(string family, CausalLMTokenizer ours, Tokenizers.DotNet.Tokenizer? native)
    {
        var hf = (HfTokenizer)ours.Tokenizer;
        int ids = 0, dec = 0, n = 0;
        foreach (var c in TokenizerFixtures.Corpus(family).Cases)
        {
            n++;
            if (native is null)
            {
                if (!ours.EncodeToIds(c.Text, false).SequenceEqual(c.Ids) || !ours.EncodeToIds(c.Text, true).SequenceEqual(c.IdsSpecial)
                    || !ours.EncodeToIds(c.Text, false, true).SequenceEqual(c.IdsSplit)) ids++;
                if (ours.Decode(c.IdsSpecial, false) != c.Decoded || ours.Decode(c.IdsSpecial, true) != c.DecodedSkip) dec++;
            }
            else
            {
                if (!native.Encode(c.Text).Select(i => (int)i).SequenceEqual(c.IdsSpecial)) ids++;
                if (native.Decode(c.IdsSpecial.Select(i => (uint)i).ToArray()) != c.DecodedSkip) dec++;
            }
        }
        var fuzz = TokenizerFixtures.Fuzz(family);
        for (int i = 0; i < TokenizerFixtures.FuzzStrings.Length; i++)
        {
            n++;
            string text = TokenizerFixtures.FuzzStrings[i];
            var expected = fuzz.Ids[i];
            if (native is null)
            {
                if (!ours.EncodeToIds(text, false).SequenceEqual(expected)) ids++;
                if (ours.Decode(expected, false) != (fuzz.Decoded[i] ?? text)) dec++;
            }
            else
            {
                var withTemplate = hf.SpecialPrefixIds.Concat(expected).Concat(hf.SpecialSuffixIds);
                if (!native.Encode(text).Select(x => (int)x).SequenceEqual(withTemplate)) ids++;
                // Skipping special tokens: HF's decode of the same ids with skip_special_tokens, computed by ours (checked above).
                if (native.Decode(expected.Select(x => (uint)x).ToArray()) != ours.Decode(expected, true)) dec++;
            }
        }
        return (n, ids, dec);
    }

    /// <summary>Tokens per second encoding every line once.</summary>
    private static double Throughput(string[] lines, Func<string, int> encode, bool parallel)
    {
        var sw = Stopwatch.StartNew();
        long tokens = 0;
        if (parallel) Parallel.ForEach(lines, () => 0L, (l, _, acc) => acc + encode(l), acc => Interlocked.Add(ref tokens, acc));
        else foreach (var l in lines) tokens += encode(l);
        return tokens / sw.Elapsed.TotalSeconds;
    }

    /// <summary>
    /// ~<paramref name="mb"/> MB of mixed text, the same on every machine: lines of the repository's Markdown and C#
    /// (prose and code) and the parity corpus and fuzz strings (many scripts, emoji, digits), shuffled with a fixed seed.
    /// </summary>
    private static string[] MixedText(double mb)
    {
        var pool = new List<string>();
        foreach (var dir in new[] { "docs", "src", "bench", "." })
        {
            if (!Directory.Exists(dir)) continue;
            var opt = dir == "." ? SearchOption.TopDirectoryOnly : SearchOption.AllDirectories;
            foreach (var f in Directory.GetFiles(dir, "*.md", opt).Concat(Directory.GetFiles(dir, "*.cs", opt)).Order(StringComparer.Ordinal))
                if (!f.Contains("/obj/") && !f.Contains("/bin/")) pool.AddRange(File.ReadAllLines(f).Where(l => l.Length > 0));
        }
        foreach (var family in new[] { "qwen3", "llama2" })
            pool.AddRange(TokenizerFixtures.Corpus(family).Cases.Select(c => c.Text.Replace("\n", " ")).Where(t => t.Length > 0));
        pool.AddRange(TokenizerFixtures.FuzzStrings.Select(s => s.Replace("\n", " ").Replace("\r", " ")).Where(t => t.Length > 0));
        var rng = new Random(20261130);
        var lines = new List<string>();
        long target = (long)(mb * 1e6), size = 0;
        while (size < target)
        {
            string l = pool[rng.Next(pool.Count)];
            lines.Add(l);
            size += Encoding.UTF8.GetByteCount(l) + 1;
        }
        return lines.ToArray();
    }

    private static void PrintTraining(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        Console.WriteLine();
        Console.WriteLine($"Model training tokens/s from {path} (GPT-2 small shape, batch 4 x 128):");
        foreach (var r in doc.RootElement.GetProperty("results").EnumerateArray())
            if (r.GetProperty("Impl").GetString() == "ours")
                Console.WriteLine($"  {r.GetProperty("Mode").GetString()} {r.GetProperty("DType").GetString()}: {r.GetProperty("TokensPerSec").GetDouble():N0} tok/s");
    }
}
