using System.Globalization;

namespace ML.Finetune.Samples.Cli;

/// <summary>A usage error: printed with the command's usage, exit code 2.</summary>
public sealed class CliException(string message) : Exception(message);

/// <summary>"--name value" options and "--flag" switches, validated against what a command accepts.</summary>
public sealed class CliArgs
{
    readonly Dictionary<string, string?> _values = new(StringComparer.Ordinal);

    public CliArgs(IEnumerable<string> args, IReadOnlyCollection<string> options, IReadOnlyCollection<string>? flags = null)
    {
        flags ??= [];
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            string a = list[i];
            if (!a.StartsWith("--")) throw new CliException($"unexpected argument '{a}'");
            if (flags.Contains(a)) { _values[a] = null; continue; }
            if (!options.Contains(a))
                throw new CliException($"unknown option '{a}' (accepted: {string.Join(", ", options.Concat(flags).OrderBy(x => x))})");
            if (i + 1 >= list.Count || list[i + 1].StartsWith("--")) throw new CliException($"option '{a}' needs a value");
            if (!_values.TryAdd(a, list[++i])) throw new CliException($"option '{a}' given twice");
        }
    }

    public bool Has(string name) => _values.ContainsKey(name);
    public string? Get(string name) => _values.TryGetValue(name, out var v) ? v : null;
    public string Required(string name) => Get(name) ?? throw new CliException($"missing required option '{name}'");

    public int Int(string name, int fallback, int min = 1, int max = int.MaxValue)
    {
        var s = Get(name);
        if (s == null) return fallback;
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) || v < min || v > max)
            throw new CliException($"option '{name}' must be an integer in [{min}, {max}], got '{s}'");
        return v;
    }

    public double Double(string name, double fallback)
    {
        var s = Get(name);
        if (s == null) return fallback;
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !(v > 0) || double.IsInfinity(v))
            throw new CliException($"option '{name}' must be a positive number, got '{s}'");
        return v;
    }

    public string ExistingFile(string name)
    {
        string p = Required(name);
        if (!File.Exists(p)) throw new CliException($"option '{name}': file not found: {p}");
        return p;
    }

    public string ExistingDir(string name, string? fallback = null)
    {
        string p = Get(name) ?? fallback ?? throw new CliException($"missing required option '{name}'");
        if (!Directory.Exists(p)) throw new CliException($"option '{name}': folder not found: {p}");
        return p;
    }
}
