using System.Text;

namespace ML.Finetune.Tokenization;

/// <summary>One HF decoder: rewrites the list of token strings (decode joins what is left).</summary>
internal abstract class HfDecoder
{
    public abstract List<string> DecodeChain(List<string> tokens);
}

internal sealed class SequenceDecoder(IReadOnlyList<HfDecoder> steps) : HfDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        foreach (var s in steps) tokens = s.DecodeChain(tokens);
        return tokens;
    }
}

/// <summary>HF ByteLevel: every token back to bytes (tokens outside the byte alphabet as their UTF-8), one lossy UTF-8 string.</summary>
internal sealed class ByteLevelDecoder : HfDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var t in tokens)
        {
            if (ByteLevelEncoding.TryDecode(t, out var b)) bytes.AddRange(b);
            else bytes.AddRange(Encoding.UTF8.GetBytes(t));
        }
        return new List<string> { Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes)) };
    }
}

/// <summary>HF ByteFallback: runs of &lt;0xNN&gt; tokens become their UTF-8 text, or one U+FFFD per byte if invalid.</summary>
internal sealed class ByteFallbackDecoder : HfDecoder
{
    private static readonly UTF8Encoding s_strict = new(false, throwOnInvalidBytes: true);

    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var pending = new List<byte>();
        foreach (var t in tokens)
        {
            if (t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>' &&
                byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte b))
            {
                pending.Add(b);
                continue;
            }
            Flush(pending, result);
            result.Add(t);
        }
        Flush(pending, result);
        return result;
    }

    private static void Flush(List<byte> pending, List<string> result)
    {
        if (pending.Count == 0) return;
        try { result.Add(s_strict.GetString(pending.ToArray())); }
        catch (DecoderFallbackException) { for (int i = 0; i < pending.Count; i++) result.Add("\uFFFD"); }
        pending.Clear();
    }
}

/// <summary>HF Fuse: all tokens into one.</summary>
internal sealed class FuseDecoder : HfDecoder
{
    public override List<string> DecodeChain(List<string> tokens) => new() { string.Concat(tokens) };
}

/// <summary>HF Strip: up to <c>start</c> leading and <c>stop</c> trailing <c>content</c> chars off each token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : HfDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        foreach (var t in tokens)
        {
            int s = 0, e = t.Length;
            while (s < start && s < t.Length && t[s] == content) s++;
            for (int i = 0; i < stop && e > s && t[e - 1] == content; i++) e--;
            result.Add(t[s..e]);
        }
        return result;
    }
}

/// <summary>HF Replace decoder: the Replace normalizer applied to each token.</summary>
internal sealed class ReplaceDecoder(ReplaceNormalizer replace) : HfDecoder
{
    public override List<string> DecodeChain(List<string> tokens) => tokens.Select(replace.Apply).ToList();
}

/// <summary>HF Metaspace decoder: the replacement char becomes a space, except in the first token where it is dropped
/// (unless the prepend scheme is "never").</summary>
internal sealed class MetaspaceDecoder(char replacement, bool prepends) : HfDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
            result.Add(i == 0 && prepends ? tokens[i].Replace(replacement.ToString(), "", StringComparison.Ordinal) : tokens[i].Replace(replacement, ' '));
        return result;
    }
}
