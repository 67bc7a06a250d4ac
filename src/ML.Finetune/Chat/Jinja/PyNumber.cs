using System.Globalization;
using System.Numerics;

namespace ML.Finetune.Chat.Jinja;

/// <summary>Python number formatting and rounding.</summary>
internal static class PyNumber
{
    /// <summary>Python's <c>repr(float)</c> (also <c>str(float)</c>): shortest round-trip digits, exponent outside 1e-4..1e16.</summary>
    public static string FloatRepr(double value)
    {
        if (double.IsNaN(value)) return "nan";
        if (double.IsPositiveInfinity(value)) return "inf";
        if (double.IsNegativeInfinity(value)) return "-inf";
        if (value == 0) return double.IsNegative(value) ? "-0.0" : "0.0";
        var (negative, digits, decimalPoint) = ShortestDigits(value);
        string body;
        if (decimalPoint > -4 && decimalPoint <= 16)
        {
            if (decimalPoint <= 0) body = "0." + new string('0', -decimalPoint) + digits;
            else if (decimalPoint >= digits.Length) body = digits + new string('0', decimalPoint - digits.Length) + ".0";
            else body = digits[..decimalPoint] + "." + digits[decimalPoint..];
        }
        else
        {
            int exponent = decimalPoint - 1;
            string mantissa = digits.Length == 1 ? digits : digits[0] + "." + digits[1..];
            body = mantissa + "e" + (exponent < 0 ? "-" : "+") + Math.Abs(exponent).ToString("00", CultureInfo.InvariantCulture);
        }
        return negative ? "-" + body : body;
    }

    /// <summary>Shortest round-trip decimal digits of a finite non-zero double, and where the decimal point goes (value = 0.d1d2... * 10^point).</summary>
    private static (bool Negative, string Digits, int DecimalPoint) ShortestDigits(double value)
    {
        // "R" is the shortest round-trip form; normalise it to digits + exponent.
        string shortest = value.ToString("R", CultureInfo.InvariantCulture);
        bool negative = shortest.StartsWith('-');
        if (negative) shortest = shortest[1..];
        int exponent = 0;
        int e = shortest.IndexOfAny(new[] { 'E', 'e' });
        if (e >= 0)
        {
            exponent = int.Parse(shortest[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            shortest = shortest[..e];
        }
        int dot = shortest.IndexOf('.');
        string intPart = dot < 0 ? shortest : shortest[..dot];
        string fracPart = dot < 0 ? "" : shortest[(dot + 1)..];
        string all = intPart + fracPart;
        int point = intPart.Length + exponent;
        int lead = 0;
        while (lead < all.Length - 1 && all[lead] == '0') lead++;
        all = all[lead..];
        point -= lead;
        all = all.TrimEnd('0');
        return (negative, all.Length == 0 ? "0" : all, point);
    }

    /// <summary>Python's <c>round(value, ndigits)</c> for floats: exact round-half-even on the binary value.</summary>
    public static double Round(double value, long ndigits)
    {
        if (double.IsNaN(value) || double.IsInfinity(value) || value == 0) return value;
        if (ndigits > 330) return value;
        if (ndigits < -330) return 0.0 * Math.Sign(value);
        // value = mantissa * 2^exp exactly.
        long bits = BitConverter.DoubleToInt64Bits(value);
        bool negative = bits < 0;
        int rawExp = (int)((bits >> 52) & 0x7FF);
        long frac = bits & 0xFFFFFFFFFFFFFL;
        BigInteger mantissa = rawExp == 0 ? frac : frac | (1L << 52);
        int exp = (rawExp == 0 ? 1 : rawExp) - 1075;
        // scaled = value * 10^ndigits as num/den.
        BigInteger num = mantissa, den = BigInteger.One;
        if (exp >= 0) num <<= exp; else den <<= -exp;
        if (ndigits >= 0) num *= BigInteger.Pow(10, (int)ndigits); else den *= BigInteger.Pow(10, (int)-ndigits);
        BigInteger q = BigInteger.DivRem(num, den, out BigInteger rem);
        BigInteger twice = rem * 2;
        if (twice > den || (twice == den && !q.IsEven)) q += 1;
        string digits = q.ToString(CultureInfo.InvariantCulture);
        string text = (negative ? "-" : "") + digits + "e" + (-ndigits).ToString(CultureInfo.InvariantCulture);
        double result = double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
        if (double.IsInfinity(result)) throw PyError.Type("rounded value too large to represent");
        return result == 0 && negative ? -0.0 : result;
    }

    /// <summary>Parses Python int literal text (as <c>int(str)</c> does): optional sign, digits, underscores between digits, surrounding whitespace.</summary>
    public static bool TryParseInt(string text, int numberBase, out long value)
    {
        value = 0;
        string s = PyText.Strip(text, null, true, true);
        if (s.Length == 0) return false;
        bool negative = false;
        if (s[0] is '+' or '-')
        {
            negative = s[0] == '-';
            s = s[1..];
        }
        if (numberBase == 16 && s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)) s = s[2..];
        else if (numberBase == 8 && s.StartsWith("0o", StringComparison.OrdinalIgnoreCase)) s = s[2..];
        else if (numberBase == 2 && s.StartsWith("0b", StringComparison.OrdinalIgnoreCase)) s = s[2..];
        if (s.Length == 0 || s[0] == '_' || s[^1] == '_' || s.Contains("__", StringComparison.Ordinal)) return false;
        BigInteger acc = 0;
        foreach (char c in s)
        {
            if (c == '_') continue;
            int d = c is >= '0' and <= '9' ? c - '0' : c is >= 'a' and <= 'z' ? c - 'a' + 10 : c is >= 'A' and <= 'Z' ? c - 'A' + 10 : 99;
            if (d >= numberBase) return false;
            acc = acc * numberBase + d;
        }
        if (negative) acc = -acc;
        if (acc > long.MaxValue || acc < long.MinValue) throw PyError.Unsupported("integers beyond 64 bits");
        value = (long)acc;
        return true;
    }

    /// <summary>Parses Python float text (as <c>float(str)</c> does).</summary>
    public static bool TryParseFloat(string text, out double value)
    {
        string s = PyText.Strip(text, null, true, true).Replace("_", "", StringComparison.Ordinal);
        string lower = s.ToLowerInvariant().TrimStart('+', '-');
        bool negative = s.StartsWith('-');
        if (lower is "inf" or "infinity") { value = negative ? double.NegativeInfinity : double.PositiveInfinity; return true; }
        if (lower == "nan") { value = double.NaN; return true; }
        if (s.Length == 0 || !s.All(c => char.IsAsciiDigit(c) || c is '.' or 'e' or 'E' or '+' or '-'))
        {
            value = 0;
            return false;
        }
        return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out value);
    }
}
