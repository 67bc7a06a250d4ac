using System.Text;

namespace ML.Finetune.Chat.Jinja;

/// <summary>
/// Python <c>str</c> semantics on .NET strings: lengths, indices and slices count code points (not UTF-16 units),
/// whitespace is Python's <c>str.isspace</c>, and case mapping is Python's full mapping (see PyCaseData.cs).
/// </summary>
internal static partial class PyText
{
    public static bool HasSurrogates(string s)
    {
        foreach (char c in s)
            if (char.IsSurrogate(c)) return true;
        return false;
    }

    public static int Length(string s)
    {
        if (!HasSurrogates(s)) return s.Length;
        int n = 0;
        for (int i = 0; i < s.Length; i += char.IsHighSurrogate(s[i]) && i + 1 < s.Length ? 2 : 1) n++;
        return n;
    }

    /// <summary>The code points of <paramref name="s"/> as integers.</summary>
    public static int[] Runes(string s)
    {
        var result = new List<int>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                result.Add(char.ConvertToUtf32(s[i], s[i + 1]));
                i++;
            }
            else result.Add(s[i]);
        }
        return result.ToArray();
    }

    public static string FromRune(int cp) => cp < 0x10000 ? ((char)cp).ToString() : char.ConvertFromUtf32(cp);

    public static string FromRunes(IEnumerable<int> runes)
    {
        var sb = new StringBuilder();
        foreach (int r in runes) AppendRune(sb, r);
        return sb.ToString();
    }

    public static void AppendRune(StringBuilder sb, int cp)
    {
        if (cp < 0x10000) sb.Append((char)cp);
        else sb.Append(char.ConvertFromUtf32(cp));
    }

    /// <summary>Iterating a string yields one-character strings.</summary>
    public static IEnumerable<object?> CodePoints(string s)
    {
        if (!HasSurrogates(s))
        {
            foreach (char c in s) yield return c.ToString();
            yield break;
        }
        foreach (int r in Runes(s)) yield return FromRune(r);
    }

    public static string Index(string s, long index)
    {
        if (!HasSurrogates(s))
        {
            long i = index < 0 ? index + s.Length : index;
            if (i < 0 || i >= s.Length) throw PyError.Type("string index out of range");
            return s[(int)i].ToString();
        }
        var runes = Runes(s);
        long j = index < 0 ? index + runes.Length : index;
        if (j < 0 || j >= runes.Length) throw PyError.Type("string index out of range");
        return FromRune(runes[j]);
    }

    public static string Slice(string s, object? start, object? stop, object? step)
    {
        if (!HasSurrogates(s))
        {
            var (a, _, st, count) = SliceIndices(s.Length, start, stop, step);
            if (st == 1) return s.Substring((int)a, (int)count);
            var sb = new StringBuilder((int)count);
            for (long i = 0, p = a; i < count; i++, p += st) sb.Append(s[(int)p]);
            return sb.ToString();
        }
        var runes = Runes(s);
        var (b, _, step2, n) = SliceIndices(runes.Length, start, stop, step);
        var result = new StringBuilder();
        for (long i = 0, p = b; i < n; i++, p += step2) AppendRune(result, runes[p]);
        return result.ToString();
    }

    /// <summary>Python's <c>slice.indices(length)</c> plus the number of selected items.</summary>
    public static (long Start, long Stop, long Step, long Count) SliceIndices(long length, object? start, object? stop, object? step)
    {
        long st = step is null ? 1 : PyOps.ToIndex(step, "slice indices");
        if (st == 0) throw PyError.Type("slice step cannot be zero");
        long lower = st < 0 ? -1 : 0, upper = st < 0 ? length - 1 : length;
        long Clamp(object? v, long dflt)
        {
            if (v is null) return dflt;
            long x = PyOps.ToIndex(v, "slice indices");
            if (x < 0)
            {
                x += length;
                return x < lower ? lower : x;
            }
            return x > upper ? upper : x;
        }
        long a = Clamp(start, st < 0 ? upper : lower);
        long b = Clamp(stop, st < 0 ? lower : upper);
        long count = st > 0 ? (b > a ? (b - a + st - 1) / st : 0) : (a > b ? (a - b - st - 1) / -st : 0);
        return (a, b, st, count);
    }

    /// <summary>Python's <c>str.isspace</c> for one code point.</summary>
    public static bool IsSpace(int cp) => cp switch
    {
        >= 0x09 and <= 0x0D => true,
        >= 0x1C and <= 0x20 => true,
        0x85 or 0xA0 or 0x1680 or 0x2028 or 0x2029 or 0x202F or 0x205F or 0x3000 => true,
        >= 0x2000 and <= 0x200A => true,
        _ => false,
    };

    /// <summary>Python's <c>strip/lstrip/rstrip</c>: whitespace when <paramref name="chars"/> is null.</summary>
    public static string Strip(string s, string? chars, bool left, bool right)
    {
        var runes = Runes(s);
        HashSet<int>? set = chars is null ? null : new HashSet<int>(Runes(chars));
        bool Strippable(int cp) => set is null ? IsSpace(cp) : set.Contains(cp);
        int a = 0, b = runes.Length;
        if (left) while (a < b && Strippable(runes[a])) a++;
        if (right) while (b > a && Strippable(runes[b - 1])) b--;
        return a == 0 && b == runes.Length ? s : FromRunes(runes[a..b]);
    }

    /// <summary>Python's <c>str.split(sep, maxsplit)</c>.</summary>
    public static List<object?> Split(string s, string? sep, long maxsplit)
    {
        var parts = new List<object?>();
        if (sep is null)
        {
            var runes = Runes(s);
            int i = 0, n = runes.Length;
            while (true)
            {
                while (i < n && IsSpace(runes[i])) i++;
                if (i >= n) break;
                if (maxsplit >= 0 && parts.Count == maxsplit)
                {
                    int end = n;
                    while (end > i && IsSpace(runes[end - 1])) end--;
                    parts.Add(FromRunes(runes[i..end]));
                    break;
                }
                int j = i;
                while (j < n && !IsSpace(runes[j])) j++;
                parts.Add(FromRunes(runes[i..j]));
                i = j;
            }
            return parts;
        }
        if (sep.Length == 0) throw PyError.Type("empty separator");
        int pos = 0;
        while (maxsplit < 0 || parts.Count < maxsplit)
        {
            int at = s.IndexOf(sep, pos, StringComparison.Ordinal);
            if (at < 0) break;
            parts.Add(s.Substring(pos, at - pos));
            pos = at + sep.Length;
        }
        parts.Add(s.Substring(pos));
        return parts;
    }

    /// <summary>Python's <c>str.rsplit(sep, maxsplit)</c>.</summary>
    public static List<object?> RSplit(string s, string? sep, long maxsplit)
    {
        if (maxsplit < 0) return Split(s, sep, -1);
        var parts = new List<object?>();
        if (sep is null)
        {
            var runes = Runes(s);
            int j = runes.Length;
            while (true)
            {
                while (j > 0 && IsSpace(runes[j - 1])) j--;
                if (j <= 0) break;
                if (parts.Count == maxsplit)
                {
                    int start = 0;
                    while (start < j && IsSpace(runes[start])) start++;
                    parts.Add(FromRunes(runes[start..j]));
                    break;
                }
                int i = j;
                while (i > 0 && !IsSpace(runes[i - 1])) i--;
                parts.Add(FromRunes(runes[i..j]));
                j = i;
            }
            parts.Reverse();
            return parts;
        }
        if (sep.Length == 0) throw PyError.Type("empty separator");
        int end = s.Length;
        while (parts.Count < maxsplit)
        {
            int at = end - sep.Length < 0 ? -1 : s.LastIndexOf(sep, end - 1, end, StringComparison.Ordinal);
            if (at < 0 || at + sep.Length > end) break;
            parts.Add(s.Substring(at + sep.Length, end - at - sep.Length));
            end = at;
        }
        parts.Add(s.Substring(0, end));
        parts.Reverse();
        return parts;
    }

    /// <summary>Python's <c>str.replace(old, new, count)</c>.</summary>
    public static string Replace(string s, string oldValue, string newValue, long count)
    {
        if (count == 0) return s;
        var sb = new StringBuilder();
        if (oldValue.Length == 0)
        {
            long done = 0;
            foreach (var ch in CodePoints(s))
            {
                if (count < 0 || done < count) { sb.Append(newValue); done++; }
                sb.Append((string)ch!);
            }
            if (count < 0 || done < count) sb.Append(newValue);
            return sb.ToString();
        }
        int pos = 0, replaced = 0;
        while (count < 0 || replaced < count)
        {
            int at = s.IndexOf(oldValue, pos, StringComparison.Ordinal);
            if (at < 0) break;
            sb.Append(s, pos, at - pos).Append(newValue);
            pos = at + oldValue.Length;
            replaced++;
        }
        sb.Append(s, pos, s.Length - pos);
        return sb.ToString();
    }

    /// <summary>Compares by code point, as Python orders strings.</summary>
    public static int Compare(string a, string b)
    {
        if (!HasSurrogates(a) && !HasSurrogates(b)) return string.CompareOrdinal(a, b);
        var x = Runes(a);
        var y = Runes(b);
        for (int i = 0; i < Math.Min(x.Length, y.Length); i++)
            if (x[i] != y[i]) return x[i].CompareTo(y[i]);
        return x.Length.CompareTo(y.Length);
    }

    /// <summary>Python's <c>str.find</c> with code-point indices.</summary>
    public static long Find(string s, string sub, bool last)
    {
        int at = last ? s.LastIndexOf(sub, StringComparison.Ordinal) : s.IndexOf(sub, StringComparison.Ordinal);
        if (at < 0) return -1;
        return HasSurrogates(s) ? Length(s.Substring(0, at)) : at;
    }

    public static long Count(string s, string sub)
    {
        if (sub.Length == 0) return Length(s) + 1;
        long n = 0;
        for (int at = s.IndexOf(sub, StringComparison.Ordinal); at >= 0; at = s.IndexOf(sub, at + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    // ---- case mapping: Python's tables (PyCaseData.cs), not .NET's invariant casing ----

    public static string Upper(string s) => MapEach(s, s_upperMulti, s_upperRuns);

    public static string Lower(string s)
    {
        var runes = Runes(s);
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < runes.Length; i++)
        {
            int cp = runes[i];
            if (cp == 0x3A3) sb.Append(FinalSigma(runes, i) ? '\u03C2' : '\u03C3');
            else AppendMapped(sb, cp, s_lowerMulti, s_lowerRuns);
        }
        return sb.ToString();
    }

    /// <summary>Python's <c>str.title()</c>: title-case a character after an uncased one, lower-case it after a cased one.</summary>
    public static string Title(string s)
    {
        var runes = Runes(s);
        var sb = new StringBuilder(s.Length);
        bool previousCased = false;
        for (int i = 0; i < runes.Length; i++)
        {
            int cp = runes[i];
            if (!previousCased) AppendMapped(sb, cp, s_titleMulti, s_titleRuns);
            else if (cp == 0x3A3) sb.Append(FinalSigma(runes, i) ? '\u03C2' : '\u03C3');
            else AppendMapped(sb, cp, s_lowerMulti, s_lowerRuns);
            previousCased = IsCased(cp);
        }
        return sb.ToString();
    }

    /// <summary>Python's <c>str.capitalize()</c>: first character title-cased, the rest lower-cased.</summary>
    public static string Capitalize(string s)
    {
        var runes = Runes(s);
        if (runes.Length == 0) return s;
        var sb = new StringBuilder(s.Length);
        AppendMapped(sb, runes[0], s_titleMulti, s_titleRuns);
        for (int i = 1; i < runes.Length; i++)
        {
            if (runes[i] == 0x3A3) sb.Append(FinalSigma(runes, i) ? '\u03C2' : '\u03C3');
            else AppendMapped(sb, runes[i], s_lowerMulti, s_lowerRuns);
        }
        return sb.ToString();
    }

    /// <summary>Python's <c>str.swapcase()</c>.</summary>
    public static string SwapCase(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (int cp in Runes(s))
        {
            // Python swaps upper- and lower-case letters and leaves the rest (title-case letters included).
            string one = FromRune(cp);
            string lower = Lower(one), upper = Upper(one);
            if (upper == one && lower != one) sb.Append(lower);
            else if (lower == one && upper != one) sb.Append(upper);
            else sb.Append(one);
        }
        return sb.ToString();
    }

    /// <summary>Whether Python considers the code point cased (Lu, Ll, Lt, Other_Lowercase, Other_Uppercase).</summary>
    public static bool IsCased(int cp) => InRanges(cp, s_cased);

    private static bool IsCaseIgnorable(int cp) => InRanges(cp, s_caseIgnorable);

    private static string MapEach(string s, Dictionary<int, string> multi, (int First, int Last, int Step, int Delta)[] runs)
    {
        var sb = new StringBuilder(s.Length);
        foreach (int cp in Runes(s)) AppendMapped(sb, cp, multi, runs);
        return sb.ToString();
    }

    private static void AppendMapped(StringBuilder sb, int cp, Dictionary<int, string> multi, (int First, int Last, int Step, int Delta)[] runs)
    {
        if (multi.TryGetValue(cp, out var m))
        {
            sb.Append(m);
            return;
        }
        int lo = 0, hi = runs.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (runs[mid].First <= cp) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        if (found >= 0 && cp <= runs[found].Last && (cp - runs[found].First) % runs[found].Step == 0) cp += runs[found].Delta;
        AppendRune(sb, cp);
    }

    private static bool InRanges(int cp, (int First, int Last)[] ranges)
    {
        int lo = 0, hi = ranges.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (cp < ranges[mid].First) hi = mid - 1;
            else if (cp > ranges[mid].Last) lo = mid + 1;
            else return true;
        }
        return false;
    }

    // Final_Sigma (Unicode 3.13): a capital sigma preceded by a cased letter and not followed by one
    // (case-ignorable characters in between are skipped) lower-cases to the final form.
    private static bool FinalSigma(int[] runes, int at)
    {
        int i = at - 1;
        while (i >= 0 && IsCaseIgnorable(runes[i])) i--;
        if (i < 0 || !IsCased(runes[i])) return false;
        int j = at + 1;
        while (j < runes.Length && IsCaseIgnorable(runes[j])) j++;
        return j >= runes.Length || !IsCased(runes[j]);
    }
}
