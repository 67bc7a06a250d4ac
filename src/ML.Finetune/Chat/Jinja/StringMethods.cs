using System.Globalization;
using System.Text;

namespace ML.Finetune.Chat.Jinja;

/// <summary>Python <c>str</c> methods, bound to a string for a template call like <c>message.content.split('x')</c>.</summary>
internal static class StringMethods
{
    public static BuiltinFunction Bind(string s, string name) => new(name, (_, args) => Invoke(s, name, args));

    /// <summary>Calls <c>s.name(*args)</c>.</summary>
    public static object? Invoke(string s, string name, CallArgs args)
    {
        object?[] a;
        switch (name)
        {
            case "upper": args.Bind(name, 0); return PyText.Upper(s);
            case "lower": args.Bind(name, 0); return PyText.Lower(s);
            case "title": args.Bind(name, 0); return PyText.Title(s);
            case "capitalize": args.Bind(name, 0); return PyText.Capitalize(s);
            case "swapcase": args.Bind(name, 0); return PyText.SwapCase(s);
            case "casefold":
                args.Bind(name, 0);
                if (s.Any(c => c > 0x7F)) throw PyError.Unsupported("str.casefold on non-ASCII text");
                return s.ToLowerInvariant();
            case "strip":
            case "lstrip":
            case "rstrip":
                a = args.Bind(name, 0, "chars");
                return PyText.Strip(s, OptionalString(a[0], name), name != "rstrip", name != "lstrip");
            case "split":
            case "rsplit":
                a = args.Bind(name, 0, "sep", "maxsplit");
                string? sep = OptionalString(a[0], name);
                long max = Given(a[1]) ? PyOps.ToIndex(a[1], "maxsplit") : -1;
                return name == "split" ? PyText.Split(s, sep, max) : PyText.RSplit(s, sep, max);
            case "splitlines":
                a = args.Bind(name, 0, "keepends");
                return SplitLines(s, Given(a[0]) && PyOps.Truthy(a[0]));
            case "startswith":
            case "endswith":
                a = args.Bind(name, 1, "prefix", "start", "end");
                if (Given(a[1]) || Given(a[2])) throw PyError.Unsupported($"str.{name} with start/end");
                var candidates = a[0] is PyTuple t ? t.Items : new[] { a[0] };
                foreach (var c in candidates)
                {
                    if (c is not string affix) throw PyError.Type($"{name} first arg must be str or a tuple of str, not {PyOps.TypeName(c)}");
                    if (name == "startswith" ? s.StartsWith(affix, StringComparison.Ordinal) : s.EndsWith(affix, StringComparison.Ordinal)) return true;
                }
                return false;
            case "replace":
                a = args.Bind(name, 2, "old", "new", "count");
                return PyText.Replace(s, RequireString(a[0], name), RequireString(a[1], name), Given(a[2]) ? PyOps.ToIndex(a[2], "count") : -1);
            case "find":
            case "rfind":
            case "index":
            case "rindex":
                a = args.Bind(name, 1, "sub", "start", "end");
                if (Given(a[1]) || Given(a[2])) throw PyError.Unsupported($"str.{name} with start/end");
                long at = PyText.Find(s, RequireString(a[0], name), last: name is "rfind" or "rindex");
                if (at < 0 && name is "index" or "rindex") throw PyError.Type("substring not found");
                return at;
            case "count":
                a = args.Bind(name, 1, "sub", "start", "end");
                if (Given(a[1]) || Given(a[2])) throw PyError.Unsupported("str.count with start/end");
                return PyText.Count(s, RequireString(a[0], name));
            case "join":
                a = args.Bind(name, 1, "iterable");
                var parts = PyIter.ToList(a[0]);
                for (int i = 0; i < parts.Count; i++)
                    if (parts[i] is not (string or Markup)) throw PyError.Type($"sequence item {i}: expected str instance, {PyOps.TypeName(parts[i])} found");
                return string.Join(s, parts.Select(PyOps.Str));
            case "removeprefix":
                a = args.Bind(name, 1, "prefix");
                string prefix = RequireString(a[0], name);
                return s.StartsWith(prefix, StringComparison.Ordinal) ? s[prefix.Length..] : s;
            case "removesuffix":
                a = args.Bind(name, 1, "suffix");
                string suffix = RequireString(a[0], name);
                return suffix.Length > 0 && s.EndsWith(suffix, StringComparison.Ordinal) ? s[..^suffix.Length] : s;
            case "partition":
            case "rpartition":
                a = args.Bind(name, 1, "sep");
                string p = RequireString(a[0], name);
                if (p.Length == 0) throw PyError.Type("empty separator");
                int pos = name == "partition" ? s.IndexOf(p, StringComparison.Ordinal) : s.LastIndexOf(p, StringComparison.Ordinal);
                if (pos < 0) return name == "partition" ? new PyTuple(new object?[] { s, "", "" }) : new PyTuple(new object?[] { "", "", s });
                return new PyTuple(new object?[] { s[..pos], p, s[(pos + p.Length)..] });
            case "center":
            case "ljust":
            case "rjust":
                a = args.Bind(name, 1, "width", "fillchar");
                long width = PyOps.ToIndex(a[0], "width");
                string fill = Given(a[1]) ? RequireString(a[1], name) : " ";
                if (PyText.Length(fill) != 1) throw PyError.Type("The fill character must be exactly one character long");
                return Justify(s, width, fill, name);
            case "zfill":
                a = args.Bind(name, 1, "width");
                long w = PyOps.ToIndex(a[0], "width");
                int len = PyText.Length(s);
                if (w <= len) return s;
                int signLen = s.Length > 0 && s[0] is '+' or '-' ? 1 : 0;
                return s[..signLen] + new string('0', (int)(w - len)) + s[signLen..];
            case "format":
                return PyFormat.Format(s, args, PyObjects.GetAttr, PyObjects.GetItem);
            case "isspace": args.Bind(name, 0); return s.Length > 0 && PyText.Runes(s).All(PyText.IsSpace);
            case "isdigit": args.Bind(name, 0); return s.Length > 0 && PyText.Runes(s).All(c => CharUnicodeInfo.GetDigitValue(PyText.FromRune(c), 0) >= 0);
            case "isdecimal": args.Bind(name, 0); return s.Length > 0 && PyText.Runes(s).All(c => CharUnicodeInfo.GetUnicodeCategory(c) == UnicodeCategory.DecimalDigitNumber);
            case "isnumeric": args.Bind(name, 0); return s.Length > 0 && PyText.Runes(s).All(c => CharUnicodeInfo.GetNumericValue(PyText.FromRune(c), 0) != -1);
            case "isalpha": args.Bind(name, 0); return s.Length > 0 && PyText.Runes(s).All(IsAlpha);
            case "isalnum": args.Bind(name, 0); return s.Length > 0 && PyText.Runes(s).All(c => IsAlpha(c) || CharUnicodeInfo.GetNumericValue(PyText.FromRune(c), 0) != -1);
            case "isascii": args.Bind(name, 0); return s.All(c => c < 0x80);
            case "isprintable": args.Bind(name, 0); return PyText.Runes(s).All(PyOps.IsPrintable);
            case "islower":
            case "isupper":
                args.Bind(name, 0);
                bool anyCased = false;
                foreach (int cp in PyText.Runes(s))
                {
                    if (!PyText.IsCased(cp)) continue;
                    anyCased = true;
                    string one = PyText.FromRune(cp);
                    if (name == "islower" ? PyText.Lower(one) != one : PyText.Upper(one) != one) return false;
                }
                return anyCased;
            default:
                throw PyError.Unsupported($"str.{name}()");
        }
    }

    private static bool IsAlpha(int cp) => CharUnicodeInfo.GetUnicodeCategory(cp) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
        or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter;

    private static string Justify(string s, long width, string fill, string how)
    {
        int len = PyText.Length(s);
        if (width <= len) return s;
        int pad = (int)(width - len);
        string Fill(int n) => new StringBuilder().Insert(0, fill, n).ToString();
        return how switch
        {
            "ljust" => s + Fill(pad),
            "rjust" => Fill(pad) + s,
            // CPython's center puts the extra character on the left when the padding and the width are both odd.
            _ => Fill(pad / 2 + (pad & (int)width & 1)) + s + Fill(pad - (pad / 2 + (pad & (int)width & 1))),
        };
    }

    private static List<object?> SplitLines(string s, bool keepEnds)
    {
        var lines = new List<object?>();
        int start = 0, i = 0;
        while (i < s.Length)
        {
            char c = s[i];
            int eol = c == '\r' && i + 1 < s.Length && s[i + 1] == '\n' ? 2
                : c is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029' ? 1 : 0;
            if (eol == 0)
            {
                i++;
                continue;
            }
            lines.Add(s[start..(keepEnds ? i + eol : i)]);
            i += eol;
            start = i;
        }
        if (start < s.Length) lines.Add(s[start..]);
        return lines;
    }

    public static bool Given(object? bound) => !ReferenceEquals(bound, CallArgs.Missing);

    private static string? OptionalString(object? value, string method) => !Given(value) || value is null ? null : RequireString(value, method);

    public static string RequireString(object? value, string method) => value switch
    {
        string s => s,
        Markup m => m.Value,
        Undefined u => throw u.Fail(),
        _ => throw PyError.Type($"{method}() argument must be str, not {PyOps.TypeName(value)}"),
    };
}

/// <summary>The non-mutating methods of Python lists, tuples and dicts.</summary>
internal static class CollectionMethods
{
    public static BuiltinFunction BindDict(PyDict d, string name) => new(name, (_, args) =>
    {
        switch (name)
        {
            case "get":
                var a = args.Bind("get", 1, "key", "default");
                return d.TryGet(a[0], out var v) ? v : StringMethods.Given(a[1]) ? a[1] : null;
            case "items":
            case "keys":
            case "values":
                args.Bind(name, 0);
                return new PyDictView(d, name);
            case "copy":
                args.Bind(name, 0);
                var copy = new PyDict();
                foreach (var kv in d.Items) copy.Set(kv.Key, kv.Value);
                return copy;
            default:
                throw PyError.Unsupported($"dict.{name}()");
        }
    });

    public static BuiltinFunction BindList(IReadOnlyList<object?> items, string name) => new(name, (_, args) =>
    {
        switch (name)
        {
            case "count":
                var c = args.Bind("count", 1, "value");
                return (long)items.Count(x => PyOps.PyEquals(x, c[0]));
            case "index":
                var a = args.Bind("index", 1, "value");
                for (int i = 0; i < items.Count; i++)
                    if (PyOps.PyEquals(items[i], a[0])) return (long)i;
                throw PyError.Type($"{PyOps.Repr(a[0])} is not in list");
            case "copy":
                args.Bind(name, 0);
                return items.ToList();
            default:
                throw PyError.Unsupported($"list.{name}()");
        }
    });
}
