using System.Text;

namespace ML.Finetune.Tokenization;

/// <summary>
/// The GPT-2 "bytes to unicode" alphabet used by byte-level BPE vocabularies (vocab.json, tokenizer.json with a
/// ByteLevel pre-tokenizer). Printable bytes map to themselves; the other bytes map to code points from U+0100 upward.
/// </summary>
public static class ByteLevelEncoding
{
    /// <summary>The GPT-2 pre-tokenization regex (contractions, letters, numbers, other, whitespace), in Oniguruma's
    /// semantics: run it through <c>UnicodeRegex</c>, which matches supplementary-plane letters as letters.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly char[] s_byteToChar = BuildTable();
    private static readonly Dictionary<char, byte> s_charToByte = BuildReverse();

    private static char[] BuildTable()
    {
        var table = new char[256];
        var direct = new bool[256];
        for (int b = '!'; b <= '~'; b++) direct[b] = true;
        for (int b = 0xA1; b <= 0xAC; b++) direct[b] = true;
        for (int b = 0xAE; b <= 0xFF; b++) direct[b] = true;
        int next = 256;
        for (int b = 0; b < 256; b++)
            table[b] = direct[b] ? (char)b : (char)next++;
        return table;
    }

    private static Dictionary<char, byte> BuildReverse()
    {
        var d = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++) d[s_byteToChar[b]] = (byte)b;
        return d;
    }

    /// <summary>Character that represents byte <paramref name="b"/> in the byte-level alphabet.</summary>
    public static char ByteToChar(byte b) => s_byteToChar[b];

    /// <summary>Encodes raw bytes as a byte-level token string.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes) sb.Append(s_byteToChar[b]);
        return sb.ToString();
    }

    /// <summary>Encodes the UTF-8 bytes of <paramref name="text"/> as a byte-level token string.</summary>
    public static string EncodeText(string text) => Encode(Encoding.UTF8.GetBytes(text));

    /// <summary>Decodes a byte-level token string back to raw bytes; false if it holds a character outside the alphabet.</summary>
    public static bool TryDecode(string token, out byte[] bytes)
    {
        bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            if (!s_charToByte.TryGetValue(token[i], out byte b)) return false;
            bytes[i] = b;
        }
        return true;
    }
}
