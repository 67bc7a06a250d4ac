using System.Text;
using ML.Finetune.Chat.Jinja;

namespace ML.Finetune.Tests.Chat;

/// <summary>Python string semantics the interpreter relies on, against Python's own tables and outputs.</summary>
public class PyTextTests
{
    [Fact]
    public void CaseMappingEqualsPythonForEveryCodePoint()
    {
        // Fixtures/python_case_table.json: every code point whose str.upper/lower/title differs from itself (gen_case_data.py).
        var table = ChatFixtures.Json("python_case_table.json")["table"]!.AsArray();
        var changed = new HashSet<int>();
        var wrong = new List<string>();
        foreach (var row in table)
        {
            int cp = (int)row![0]!;
            changed.Add(cp);
            string ch = PyText.FromRune(cp);
            Check(cp, "upper", (string)row[1]!, PyText.Upper(ch), wrong);
            Check(cp, "lower", (string)row[2]!, PyText.Lower(ch), wrong);
            Check(cp, "title", (string)row[3]!, PyText.Title(ch), wrong);
        }
        // ... and every other code point maps to itself (planes 2-16 have no cased characters).
        for (int cp = 0; cp <= 0x1FFFF; cp++)
        {
            if (cp is >= 0xD800 and <= 0xDFFF || changed.Contains(cp)) continue;
            string ch = PyText.FromRune(cp);
            if (PyText.Upper(ch) != ch || PyText.Lower(ch) != ch || PyText.Title(ch) != ch) wrong.Add($"U+{cp:X4}: changes case, Python leaves it");
        }
        Assert.True(wrong.Count == 0, $"{wrong.Count} mismatches, e.g.\n" + string.Join("\n", wrong.Take(20)));
        Assert.True(table.Count > 2500);
    }

    private static void Check(int cp, string what, string expected, string actual, List<string> wrong)
    {
        if (expected != actual) wrong.Add($"U+{cp:X4} {what}: Python '{expected}', here '{actual}'");
    }

    [Theory]
    [InlineData("ΟΔΟΣ", "οδος")]
    [InlineData("ΟΔΟΣ.", "οδος.")]
    [InlineData("ΣΑ", "σα")]
    [InlineData("Σ", "σ")]
    public void LowerUsesTheFinalSigmaRule(string input, string expected) => Assert.Equal(expected, PyText.Lower(input));

    [Fact]
    public void LengthsAndSlicesCountCodePoints()
    {
        const string s = "a😊b👩🏽‍💻";
        Assert.Equal(7, PyText.Length(s)); // a, 😊, b, 👩, 🏽, ZWJ, 💻
        Assert.Equal("😊", PyText.Index(s, 1));
        Assert.Equal("💻", PyText.Index(s, -1));
        Assert.Equal("😊b", PyText.Slice(s, 1L, 3L, null));
        Assert.Equal("💻‍🏽👩b😊a", PyText.Slice(s, null, null, -1L));
    }

    [Theory]
    [InlineData(0.1, "0.1")]
    [InlineData(1e16, "1e+16")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(0.00001, "1e-05")]
    [InlineData(1.5e-7, "1.5e-07")]
    [InlineData(-2.5, "-2.5")]
    [InlineData(123456789.125, "123456789.125")]
    [InlineData(1.7976931348623157e308, "1.7976931348623157e+308")]
    [InlineData(5e-324, "5e-324")]
    public void FloatsPrintAsPythonRepr(double value, string expected) => Assert.Equal(expected, PyNumber.FloatRepr(value));

    [Theory]
    [InlineData(2.675, 2, 2.67)]   // the binary value is below 2.675
    [InlineData(2.5, 0, 2.0)]      // half to even
    [InlineData(3.5, 0, 4.0)]
    [InlineData(-0.5, 0, -0.0)]
    [InlineData(1234.5678, -2, 1200.0)]
    [InlineData(0.125, 2, 0.12)]
    public void RoundIsPythonsCorrectlyRoundedHalfEven(double value, long digits, double expected) =>
        Assert.Equal(expected, PyNumber.Round(value, digits));

    [Fact]
    public void StripAndSplitUsePythonWhitespace()
    {
        Assert.Equal("x", PyText.Strip("\u3000\u2028 x\x1c\x85", null, true, true));
        Assert.Equal(new object?[] { "a", "b" }, PyText.Split("\u00a0a\u2003b\n", null, -1));
        Assert.Equal(new object?[] { "a b", "c" }, PyText.RSplit("a b c", null, 1));
        Assert.Equal(new object?[] { "", "a", "" }, PyText.Split(",a,", ",", -1));
        var sb = new StringBuilder();
        PyText.AppendRune(sb, 0x1F600);
        Assert.Equal("😀", sb.ToString());
    }
}
