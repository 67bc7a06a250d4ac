using System.Globalization;
using System.Text;

namespace ML.Finetune.Chat.Jinja;

/// <summary>Python string formatting: <c>"%s" % x</c>, <c>str.format</c>, format specs, and markupsafe's escape.</summary>
internal static class PyFormat
{
    /// <summary>markupsafe.escape.</summary>
    public static string Escape(string s) => s.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal)
        .Replace(">", "&gt;", StringComparison.Ordinal).Replace("\"", "&#34;", StringComparison.Ordinal).Replace("'", "&#39;", StringComparison.Ordinal);

    /// <summary>printf-style <c>format % args</c> for the conversions s, r, d, i, f, F, x, X, o, c and %.</summary>
    public static string Percent(string format, object? args)
    {
        var positional = args is PyTuple t ? t.Items : new[] { args };
        var mapping = args as PyDict;
        int next = 0;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c != '%')
            {
                sb.Append(c);
                continue;
            }
            if (++i >= format.Length) throw PyError.Type("incomplete format");
            object? value = null;
            bool haveValue = false;
            if (format[i] == '(')
            {
                int close = format.IndexOf(')', i);
                if (close < 0 || mapping is null) throw PyError.Type("format requires a mapping");
                string key = format[(i + 1)..close];
                if (!mapping.TryGet(key, out value)) throw PyError.Type($"KeyError: {PyOps.Repr(key)}");
                haveValue = true;
                i = close + 1;
            }
            string flags = "";
            while (i < format.Length && "-+ 0#".Contains(format[i])) flags += format[i++];
            int width = ReadNumber(format, ref i);
            int precision = -1;
            if (i < format.Length && format[i] == '.')
            {
                i++;
                precision = Math.Max(0, ReadNumber(format, ref i));
            }
            if (i >= format.Length) throw PyError.Type("incomplete format");
            char conv = format[i];
            if (conv == '%')
            {
                sb.Append('%');
                continue;
            }
            if (!haveValue)
            {
                if (next >= positional.Count) throw PyError.Type("not enough arguments for format string");
                value = positional[next++];
            }
            string body = conv switch
            {
                's' => PyOps.Str(value),
                'r' => PyOps.Repr(value),
                'd' or 'i' => FormatInteger(value, flags),
                'f' or 'F' => FormatFixed(PyOps.ToDouble(value), precision < 0 ? 6 : precision, flags),
                'x' => Convert.ToString(PyOps.ToLong(value), 16),
                'X' => Convert.ToString(PyOps.ToLong(value), 16).ToUpperInvariant(),
                'o' => Convert.ToString(PyOps.ToLong(value), 8),
                'c' => value is string ch ? ch : PyText.FromRune((int)PyOps.ToLong(value)),
                _ => throw PyError.Unsupported($"'%{conv}' string formatting"),
            };
            if (conv is 's' or 'r' && precision >= 0 && PyText.Length(body) > precision) body = PyText.Slice(body, null, (long)precision, null);
            sb.Append(Pad(body, width, flags.Contains('-') ? '<' : '>', flags.Contains('0') && conv is not ('s' or 'r') && !flags.Contains('-') ? '0' : ' '));
        }
        if (mapping is null && next < positional.Count && args is PyTuple)
            throw PyError.Type("not all arguments converted during string formatting");
        return sb.ToString();
    }

    private static int ReadNumber(string s, ref int i)
    {
        int start = i;
        while (i < s.Length && char.IsAsciiDigit(s[i])) i++;
        return i > start ? int.Parse(s[start..i], CultureInfo.InvariantCulture) : -1;
    }

    private static string FormatInteger(object? value, string flags)
    {
        long n = value is double d ? (long)Math.Truncate(d) : PyOps.ToLong(value);
        string s = n.ToString(CultureInfo.InvariantCulture);
        if (n >= 0 && flags.Contains('+')) s = "+" + s;
        else if (n >= 0 && flags.Contains(' ')) s = " " + s;
        return s;
    }

    private static string FormatFixed(double value, int precision, string flags)
    {
        if (double.IsNaN(value)) return "nan";
        if (double.IsInfinity(value)) return value > 0 ? "inf" : "-inf";
        // Round exactly (as C's printf does) before fixing the digits.
        string s = PyNumber.Round(value, precision).ToString("F" + precision, CultureInfo.InvariantCulture);
        if (value >= 0 && flags.Contains('+')) s = "+" + s;
        return s;
    }

    private static string Pad(string body, int width, char align, char fill)
    {
        int len = PyText.Length(body);
        if (width <= len) return body;
        int pad = width - len;
        if (fill == '0' && align == '>' && body.Length > 0 && body[0] is '-' or '+') return body[0] + new string('0', pad) + body[1..];
        return align switch
        {
            '<' => body + new string(fill, pad),
            '^' => new string(fill, pad / 2) + body + new string(fill, pad - pad / 2),
            _ => new string(fill, pad) + body,
        };
    }

    /// <summary>Python's <c>str.format(*args, **kwargs)</c> (the sandbox's safe formatter); attribute lookups go through <paramref name="getAttr"/>.</summary>
    public static string Format(string format, CallArgs args, Func<object?, string, object?> getAttr, Func<object?, object?, object?> getItem)
    {
        var sb = new StringBuilder();
        int auto = 0;
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c == '}')
            {
                if (i + 1 < format.Length && format[i + 1] == '}') { sb.Append('}'); i++; continue; }
                throw PyError.Type("Single '}' encountered in format string");
            }
            if (c != '{')
            {
                sb.Append(c);
                continue;
            }
            if (i + 1 < format.Length && format[i + 1] == '{') { sb.Append('{'); i++; continue; }
            int depth = 1, j = i + 1;
            while (j < format.Length && depth > 0)
            {
                if (format[j] == '{') depth++;
                else if (format[j] == '}') depth--;
                if (depth > 0) j++;
            }
            if (j >= format.Length) throw PyError.Type("Single '{' encountered in format string");
            string field = format[(i + 1)..j];
            i = j;
            string spec = "";
            char conversion = '\0';
            int colon = field.IndexOf(':');
            if (colon >= 0) { spec = field[(colon + 1)..]; field = field[..colon]; }
            int bang = field.IndexOf('!');
            if (bang >= 0) { conversion = field.Length > bang + 1 ? field[bang + 1] : '?'; field = field[..bang]; }
            if (spec.Contains('{')) throw PyError.Unsupported("nested replacement fields in a format spec");
            object? value = ResolveField(field, args, ref auto, getAttr, getItem);
            value = conversion switch
            {
                '\0' => value,
                's' => PyOps.Str(value),
                'r' => PyOps.Repr(value),
                _ => throw PyError.Unsupported($"format conversion '!{conversion}'"),
            };
            sb.Append(FormatValue(value, spec));
        }
        return sb.ToString();
    }

    private static object? ResolveField(string field, CallArgs args, ref int auto, Func<object?, string, object?> getAttr, Func<object?, object?, object?> getItem)
    {
        int end = 0;
        while (end < field.Length && field[end] is not ('.' or '[')) end++;
        string head = field[..end];
        object? value;
        if (head.Length == 0 || char.IsAsciiDigit(head[0]))
        {
            int index = head.Length == 0 ? auto++ : int.Parse(head, CultureInfo.InvariantCulture);
            if (index >= args.Positional.Count) throw PyError.Type($"Replacement index {index} out of range for positional args tuple");
            value = args.Positional[index];
        }
        else
        {
            var kw = args.Keywords.FirstOrDefault(k => k.Key == head);
            if (kw.Key is null) throw PyError.Type($"KeyError: {PyOps.Repr(head)}");
            value = kw.Value;
        }
        int p = end;
        while (p < field.Length)
        {
            if (field[p] == '.')
            {
                int q = p + 1;
                while (q < field.Length && field[q] is not ('.' or '[')) q++;
                value = getAttr(value, field[(p + 1)..q]);
                p = q;
            }
            else
            {
                int close = field.IndexOf(']', p);
                if (close < 0) throw PyError.Type("Missing ']' in format string");
                string key = field[(p + 1)..close];
                value = getItem(value, key.All(char.IsAsciiDigit) && key.Length > 0 ? long.Parse(key, CultureInfo.InvariantCulture) : key);
                p = close + 1;
            }
        }
        return value;
    }

    /// <summary>Python's <c>format(value, spec)</c> for the common part of the format-spec mini-language.</summary>
    public static string FormatValue(object? value, string spec)
    {
        if (spec.Length == 0) return PyOps.Str(value);
        int i = 0;
        char fill = ' ', align = '\0';
        if (spec.Length >= 2 && spec[1] is '<' or '>' or '^' or '=') { fill = spec[0]; align = spec[1]; i = 2; }
        else if (spec[0] is '<' or '>' or '^' or '=') { align = spec[0]; i = 1; }
        char sign = '-';
        if (i < spec.Length && spec[i] is '+' or '-' or ' ') sign = spec[i++];
        if (i < spec.Length && spec[i] == '0') { if (align == '\0') { fill = '0'; align = '='; } i++; }
        int width = ReadNumber(spec, ref i);
        bool grouping = i < spec.Length && spec[i] == ',';
        if (grouping) i++;
        int precision = -1;
        if (i < spec.Length && spec[i] == '.') { i++; precision = ReadNumber(spec, ref i); }
        char type = i < spec.Length ? spec[i++] : '\0';
        if (i != spec.Length || grouping) throw PyError.Unsupported($"format spec '{spec}'");
        string body;
        switch (value)
        {
            case string or Markup when type is '\0' or 's':
                body = PyOps.Str(value);
                if (precision >= 0 && PyText.Length(body) > precision) body = PyText.Slice(body, null, (long)precision, null);
                if (align == '\0') align = '<';
                break;
            case long or bool when type is '\0' or 'd':
                long n = PyOps.ToLong(value);
                body = Signed(Math.Abs(n).ToString(CultureInfo.InvariantCulture), n < 0, sign);
                if (align == '\0') align = '>';
                break;
            case long or bool or double when type is 'f' or 'F' or '%':
                double d = PyOps.ToDouble(value) * (type == '%' ? 100 : 1);
                int digits = precision < 0 ? 6 : precision;
                body = Signed(PyNumber.Round(Math.Abs(d), digits).ToString("F" + digits, CultureInfo.InvariantCulture), d < 0, sign) + (type == '%' ? "%" : "");
                if (align == '\0') align = '>';
                break;
            default:
                throw PyError.Unsupported($"format spec '{spec}' for a {PyOps.TypeName(value)}");
        }
        if (width <= PyText.Length(body)) return body;
        int pad = width - PyText.Length(body);
        if (align == '=')
        {
            int signLen = body.Length > 0 && body[0] is '-' or '+' or ' ' ? 1 : 0;
            return body[..signLen] + new string(fill, pad) + body[signLen..];
        }
        return Pad(body, width, align, fill);
    }

    private static string Signed(string digits, bool negative, char sign) =>
        negative ? "-" + digits : sign == '+' ? "+" + digits : sign == ' ' ? " " + digits : digits;
}
