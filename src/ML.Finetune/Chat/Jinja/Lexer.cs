using System.Globalization;
using System.Text;

namespace ML.Finetune.Chat.Jinja;

internal enum TokenKind { Data, VariableBegin, VariableEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, Eof }

internal readonly record struct Token(TokenKind Kind, string Text, object? Value, int Line, int Column)
{
    public bool IsName(string name) => Kind == TokenKind.Name && Text == name;
    public bool IsOp(string op) => Kind == TokenKind.Operator && Text == op;

    public string Describe() => Kind switch
    {
        TokenKind.Eof => "end of template",
        TokenKind.BlockEnd => "end of statement block",
        TokenKind.VariableEnd => "end of print statement",
        TokenKind.Data => "template data",
        _ => Text,
    };
}

/// <summary>
/// Splits a template into tokens exactly as jinja2's lexer does under transformers' environment
/// (<c>trim_blocks=True</c>, <c>lstrip_blocks=True</c>, <c>keep_trailing_newline=False</c>): newlines normalised to
/// "\n", one trailing newline dropped, <c>-</c>/<c>+</c> whitespace control, raw blocks and comments.
/// </summary>
internal sealed class Lexer
{
    private static readonly string[] s_operators =
        { "**", "//", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";" };

    private readonly string _src;
    private readonly List<Token> _tokens = new();
    private readonly int[] _lineStarts;
    private int _pos;
    private bool _lineStarting = true;

    private Lexer(string source)
    {
        _src = NormalizeNewlines(source);
        if (_src.EndsWith('\n')) _src = _src[..^1];
        var starts = new List<int> { 0 };
        for (int i = 0; i < _src.Length; i++)
            if (_src[i] == '\n') starts.Add(i + 1);
        _lineStarts = starts.ToArray();
    }

    public static List<Token> Tokenize(string source)
    {
        var lexer = new Lexer(source);
        lexer.Run();
        return lexer._tokens;
    }

    private static string NormalizeNewlines(string s) =>
        s.Contains('\r') ? s.Replace("\r\n", "\n", StringComparison.Ordinal).Replace('\r', '\n') : s;

    private (int Line, int Column) Position(int offset)
    {
        int lo = 0, hi = _lineStarts.Length - 1;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (_lineStarts[mid] <= offset) lo = mid; else hi = mid - 1;
        }
        return (lo + 1, offset - _lineStarts[lo] + 1);
    }

    private JinjaSyntaxException Error(string message, int offset)
    {
        var (line, col) = Position(offset);
        return new JinjaSyntaxException(message, line, col);
    }

    private void Add(TokenKind kind, string text, object? value, int offset)
    {
        var (line, col) = Position(offset);
        _tokens.Add(new Token(kind, text, value, line, col));
    }

    private void Run()
    {
        while (_pos < _src.Length)
        {
            int open = FindTagStart(_pos);
            if (open < 0)
            {
                Add(TokenKind.Data, _src[_pos..], null, _pos);
                break;
            }
            char kind = _src[open + 1]; // '{', '%' or '#'
            int afterOpen = open + 2;
            char sign = afterOpen < _src.Length && _src[afterOpen] is '-' or '+' ? _src[afterOpen] : '\0';
            int rawEnd = kind == '%' ? MatchRawBegin(open) : -1;
            // The sign of a raw tag is the one right after "{%" as well.
            string text = StripBefore(_src[_pos..open], sign, isVariable: kind == '{');
            if (text.Length > 0) Add(TokenKind.Data, text, null, _pos);
            if (rawEnd >= 0)
            {
                _lineStarting = _src[rawEnd - 1] == '\n';
                _pos = rawEnd;
                LexRaw();
                continue;
            }
            _lineStarting = false;
            _pos = afterOpen + (sign != '\0' ? 1 : 0);
            switch (kind)
            {
                case '#': LexComment(open); break;
                case '%':
                    Add(TokenKind.BlockBegin, "{%", null, open);
                    LexTag(isBlock: true, open);
                    break;
                default:
                    Add(TokenKind.VariableBegin, "{{", null, open);
                    LexTag(isBlock: false, open);
                    break;
            }
        }
        Add(TokenKind.Eof, "", null, _src.Length);
    }

    private int FindTagStart(int from)
    {
        for (int i = from; i + 1 < _src.Length; i++)
            if (_src[i] == '{' && _src[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    // Applies "-" (strip all whitespace before the tag) or lstrip_blocks (strip the tag's indentation) to the data before a tag.
    private string StripBefore(string text, char sign, bool isVariable)
    {
        if (sign == '-') return RStripPython(text);
        if (sign == '+' || isVariable) return text;
        int lineStart = text.LastIndexOf('\n') + 1;
        if (lineStart > 0 || _lineStarting)
        {
            bool allSpace = lineStart < text.Length;
            for (int i = lineStart; i < text.Length && allSpace; i++) allSpace = PyText.IsSpace(text[i]);
            if (allSpace) return text[..lineStart];
        }
        return text;
    }

    private static string RStripPython(string text)
    {
        int end = text.Length;
        while (end > 0 && PyText.IsSpace(text[end - 1])) end--;
        return text[..end];
    }

    private int SkipWhitespace(int i)
    {
        while (i < _src.Length && PyText.IsSpace(_src[i])) i++;
        return i;
    }

    // "{%(-|+|)\s*raw\s*(-%}\s*|%})" at `open`: returns the end of the match, or -1.
    private int MatchRawBegin(int open)
    {
        int i = open + 2;
        if (i < _src.Length && _src[i] is '-' or '+') i++;
        i = SkipWhitespace(i);
        if (string.CompareOrdinal(_src, i, "raw", 0, 3) != 0) return -1;
        i = SkipWhitespace(i + 3);
        if (string.CompareOrdinal(_src, i, "-%}", 0, 3) == 0) return SkipWhitespace(i + 3);
        if (string.CompareOrdinal(_src, i, "%}", 0, 2) == 0) return i + 2;
        return -1;
    }

    private void LexRaw()
    {
        for (int i = _pos; i + 1 < _src.Length; i++)
        {
            if (_src[i] != '{' || _src[i + 1] != '%') continue;
            int j = i + 2;
            char sign = j < _src.Length && _src[j] is '-' or '+' ? _src[j] : '\0';
            if (sign != '\0') j++;
            j = SkipWhitespace(j);
            if (string.CompareOrdinal(_src, j, "endraw", 0, 6) != 0) continue;
            j = SkipWhitespace(j + 6);
            int end = MatchBlockEnd(j);
            if (end < 0) continue;
            string text = StripBefore(_src[_pos..i], sign, isVariable: false);
            if (text.Length > 0) Add(TokenKind.Data, text, null, _pos);
            _lineStarting = _src[end - 1] == '\n';
            _pos = end;
            return;
        }
        throw Error("Missing end of raw directive", _pos);
    }

    // "+%}" | "-%}\s*" | "%}\n?" (trim_blocks) at i: returns the end of the match, or -1.
    private int MatchBlockEnd(int i) => MatchTagEnd(i, '%');

    private int MatchTagEnd(int i, char kind)
    {
        if (i + 2 < _src.Length && _src[i] == '+' && _src[i + 1] == kind && _src[i + 2] == '}') return i + 3;
        if (i + 2 < _src.Length && _src[i] == '-' && _src[i + 1] == kind && _src[i + 2] == '}') return SkipWhitespace(i + 3);
        if (i + 1 < _src.Length && _src[i] == kind && _src[i + 1] == '}')
            return i + 2 < _src.Length && _src[i + 2] == '\n' ? i + 3 : i + 2;
        return -1;
    }

    private void LexComment(int open)
    {
        for (int i = _pos; i < _src.Length; i++)
        {
            int end = MatchTagEnd(i, '#');
            if (end < 0) continue;
            _lineStarting = _src[end - 1] == '\n';
            _pos = end;
            return;
        }
        throw Error("Missing end of comment tag", open);
    }

    private void LexTag(bool isBlock, int open)
    {
        var balance = new Stack<char>();
        while (true)
        {
            if (_pos >= _src.Length)
                throw Error($"unexpected end of template, expected '{(isBlock ? "%}" : "}}")}'", open);
            if (balance.Count == 0)
            {
                int end = isBlock ? MatchBlockEnd(_pos) : MatchVariableEnd(_pos);
                if (end >= 0)
                {
                    Add(isBlock ? TokenKind.BlockEnd : TokenKind.VariableEnd, isBlock ? "%}" : "}}", null, _pos);
                    _lineStarting = _src[end - 1] == '\n';
                    _pos = end;
                    return;
                }
            }
            char c = _src[_pos];
            if (PyText.IsSpace(c))
            {
                _pos = SkipWhitespace(_pos);
                continue;
            }
            if (TryNumber()) continue;
            if (IsNameChar(c))
            {
                int start = _pos;
                while (_pos < _src.Length && IsNameChar(_src[_pos])) _pos++;
                string name = _src[start.._pos];
                if (char.IsAsciiDigit(name[0]) || !IsIdentifierStart(name[0]))
                    throw Error("Invalid character in identifier", start);
                Add(TokenKind.Name, name, null, start);
                continue;
            }
            if (c is '\'' or '"')
            {
                LexString(c);
                continue;
            }
            string? op = s_operators.FirstOrDefault(o => string.CompareOrdinal(_src, _pos, o, 0, o.Length) == 0);
            if (op is null) throw Error($"unexpected char {PyOps.StringRepr(c.ToString())} at {_pos}", _pos);
            if (op is "(" or "[" or "{") balance.Push(op == "(" ? ')' : op == "[" ? ']' : '}');
            else if (op is ")" or "]" or "}")
            {
                if (balance.Count == 0) throw Error($"unexpected '{op}'", _pos);
                char expected = balance.Pop();
                if (expected != op[0]) throw Error($"unexpected '{op}', expected '{expected}'", _pos);
            }
            Add(TokenKind.Operator, op, null, _pos);
            _pos += op.Length;
        }
    }

    // "-}}\s*" | "}}"
    private int MatchVariableEnd(int i)
    {
        if (i + 2 < _src.Length && _src[i] == '-' && _src[i + 1] == '}' && _src[i + 2] == '}') return SkipWhitespace(i + 3);
        if (i + 1 < _src.Length && _src[i] == '}' && _src[i + 1] == '}') return i + 2;
        return -1;
    }

    private static bool IsNameChar(char c)
    {
        if (c == '_' || char.IsLetterOrDigit(c)) return true;
        var cat = CharUnicodeInfo.GetUnicodeCategory(c);
        return cat is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.ConnectorPunctuation
            or UnicodeCategory.LetterNumber or UnicodeCategory.DecimalDigitNumber;
    }

    private static bool IsIdentifierStart(char c) => c == '_' || char.IsLetter(c) || CharUnicodeInfo.GetUnicodeCategory(c) == UnicodeCategory.LetterNumber;

    private bool TryNumber()
    {
        char c = _src[_pos];
        if (!char.IsAsciiDigit(c)) return false;
        int start = _pos;
        // Float first (jinja tries its float rule before the integer rule), never right after a '.'.
        if (start == 0 || _src[start - 1] != '.')
        {
            int i = DigitRun(start);
            int afterInt = i;
            bool isFloat = false;
            if (i < _src.Length && _src[i] == '.' && i + 1 < _src.Length && char.IsAsciiDigit(_src[i + 1]))
            {
                i = DigitRun(i + 1);
                isFloat = true;
            }
            int expEnd = MatchExponent(i);
            if (expEnd > 0) { i = expEnd; isFloat = true; }
            else if (!isFloat) i = afterInt;
            if (isFloat)
            {
                string text = _src[start..i];
                Add(TokenKind.Float, text, double.Parse(text.Replace("_", "", StringComparison.Ordinal), NumberStyles.Float, CultureInfo.InvariantCulture), start);
                _pos = i;
                return true;
            }
        }
        // Integer: 0b.., 0o.., 0x.., [1-9](_?\d)*, 0(_?0)*
        if (c == '0' && _pos + 1 < _src.Length && char.ToLowerInvariant(_src[_pos + 1]) is 'b' or 'o' or 'x')
        {
            int nb = char.ToLowerInvariant(_src[_pos + 1]) switch { 'b' => 2, 'o' => 8, _ => 16 };
            int i = _pos + 2, digits = 0;
            while (i < _src.Length)
            {
                int skip = _src[i] == '_' && i + 1 < _src.Length ? 1 : 0;
                int d = HexValue(_src[i + skip]);
                if (d < 0 || d >= nb) break;
                i += skip + 1;
                digits++;
            }
            if (digits > 0)
            {
                PyNumber.TryParseInt(_src[_pos..i], nb, out long v);
                Add(TokenKind.Integer, _src[_pos..i], v, _pos);
                _pos = i;
                return true;
            }
        }
        int j = _pos + 1;
        while (j < _src.Length)
        {
            int skip = _src[j] == '_' && j + 1 < _src.Length ? 1 : 0;
            char d = _src[j + skip];
            if (!char.IsAsciiDigit(d) || (c == '0' && d != '0')) break;
            j += skip + 1;
        }
        string intText = _src[_pos..j];
        if (!PyNumber.TryParseInt(intText, 10, out long value)) throw Error($"invalid integer literal {intText}", _pos);
        Add(TokenKind.Integer, intText, value, _pos);
        _pos = j;
        return true;
    }

    private static int HexValue(char c) => c is >= '0' and <= '9' ? c - '0' : c is >= 'a' and <= 'f' ? c - 'a' + 10 : c is >= 'A' and <= 'F' ? c - 'A' + 10 : -1;

    // (\d+_)*\d+
    private int DigitRun(int i)
    {
        while (i < _src.Length && char.IsAsciiDigit(_src[i]))
        {
            i++;
            if (i + 1 < _src.Length && _src[i] == '_' && char.IsAsciiDigit(_src[i + 1])) i++;
        }
        return i;
    }

    // e[+-]?(\d+_)*\d+
    private int MatchExponent(int i)
    {
        if (i >= _src.Length || _src[i] is not ('e' or 'E')) return -1;
        int j = i + 1;
        if (j < _src.Length && _src[j] is '+' or '-') j++;
        if (j >= _src.Length || !char.IsAsciiDigit(_src[j])) return -1;
        return DigitRun(j);
    }

    private void LexString(char quote)
    {
        int start = _pos;
        int i = _pos + 1;
        while (i < _src.Length && _src[i] != quote)
        {
            if (_src[i] == '\\') i++;
            i++;
        }
        if (i >= _src.Length) throw Error("unexpected char " + PyOps.StringRepr(quote.ToString()) + $" at {start}", start);
        string body = _src[(start + 1)..i];
        Add(TokenKind.String, _src[start..(i + 1)], Unescape(body, start), start);
        _pos = i + 1;
    }

    // Python's "unicode-escape" decoding, which jinja applies to string literals.
    private string Unescape(string s, int offset)
    {
        if (!s.Contains('\\')) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c != '\\' || i + 1 >= s.Length)
            {
                sb.Append(c);
                continue;
            }
            char e = s[++i];
            switch (e)
            {
                case '\n': break;
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'v': sb.Append('\v'); break;
                case 'x': sb.Append((char)HexEscape(s, ref i, 2, offset)); break;
                case 'u': sb.Append((char)HexEscape(s, ref i, 4, offset)); break;
                case 'U':
                    int cp = HexEscape(s, ref i, 8, offset);
                    if (cp > 0x10FFFF) throw Error("illegal Unicode character", offset);
                    PyText.AppendRune(sb, cp);
                    break;
                case 'N': throw new JinjaNotImplementedException("\\N{...} escape in a string literal", Position(offset).Line, Position(offset).Column);
                case >= '0' and <= '7':
                    int value = e - '0', n = 1;
                    while (n < 3 && i + 1 < s.Length && s[i + 1] is >= '0' and <= '7') { value = value * 8 + (s[++i] - '0'); n++; }
                    PyText.AppendRune(sb, value);
                    break;
                default:
                    // Unknown escapes keep their backslash; a non-ASCII character is first written as Python's
                    // backslashreplace form (\xe9), which the decoder then leaves as text after the literal backslash.
                    sb.Append('\\');
                    if (e > 0x7F) sb.Append(e <= 0xFF ? $"\\x{(int)e:x2}" : $"\\u{(int)e:x4}");
                    else sb.Append(e);
                    break;
            }
        }
        return sb.ToString();
    }

    private int HexEscape(string s, ref int i, int digits, int offset)
    {
        int value = 0;
        for (int k = 1; k <= digits; k++)
        {
            int d = i + k < s.Length ? HexValue(s[i + k]) : -1;
            if (d < 0) throw Error($"truncated \\{s[i]}{new string('X', digits)} escape", offset);
            value = value * 16 + d;
        }
        i += digits;
        return value;
    }
}
