using System.Diagnostics;
using System.Globalization;

namespace ML.Finetune.Samples.Cli;

/// <summary>
/// Training progress in the console: on a terminal a one-line bar redrawn in place (step, loss, tokens/s, ETA); when
/// the output is redirected (a log file, a pipe, a test) plain lines every <see cref="Every"/> steps and at the last.
/// Tokens/s and the ETA are measured from the first step reported in this process (a resumed run counts from its resume point).
/// </summary>
public sealed class ProgressReporter
{
    readonly TextWriter _out;
    readonly bool _bar, _silent;
    readonly Stopwatch _clock = new();
    int _firstDone = -1, _lastLine = -1;
    long _tokens;
    string? _label;
    bool _barShown;

    ProgressReporter(TextWriter output, bool bar, bool silent) { _out = output; _bar = bar; _silent = silent; }

    /// <summary>A bar when <paramref name="output"/> is the console attached to a terminal; plain lines otherwise; nothing when <paramref name="silent"/>.</summary>
    public static ProgressReporter For(TextWriter output, bool silent) =>
        new(output, !silent && ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected, silent);

    /// <summary>Plain lines only (tests).</summary>
    public static ProgressReporter Lines(TextWriter output) => new(output, bar: false, silent: false);

    /// <summary>Plain-line cadence for a run of <paramref name="total"/> steps: about ten lines, at most 50 steps apart.</summary>
    public static int Every(int total) => Math.Clamp(total / 10, 1, 50);

    /// <summary>A step finished: <paramref name="done"/> of <paramref name="total"/> steps of the run named <paramref name="label"/>.</summary>
    public void Step(string? label, int done, int total, double loss, long tokens)
    {
        if (_silent) return;
        if (label != _label || _firstDone < 0 || done <= _firstDone)
        {
            if (_barShown) EndBar();
            // The first report of a run is the baseline: the time its step took is unknown, so rates count from here.
            _label = label; _firstDone = done; _tokens = 0; _lastLine = -1;
            _clock.Restart();
        }
        else _tokens += tokens;
        string text = Describe(label, done, total, loss);
        if (_bar)
        {
            int width = SafeWidth();
            string line = $"{text} {Bar(done, total, 20)}";
            _out.Write("\r" + (line.Length >= width ? line[..(width - 1)] : line.PadRight(width - 1)));
            _barShown = true;
            if (done == total) EndBar();
        }
        else if (done == total || _lastLine < 0 || done - _lastLine >= Every(total))
        {
            _out.WriteLine(text);
            _lastLine = done;
        }
    }

    /// <summary>Ends a bar line (before other output, and at the end of a run).</summary>
    public void EndBar()
    {
        if (!_barShown) return;
        _out.WriteLine();
        _barShown = false;
    }

    string Describe(string? label, int done, int total, double loss)
    {
        int ran = done - _firstDone;
        double seconds = _clock.Elapsed.TotalSeconds;
        string rate = seconds > 0 && _tokens > 0 ? $"  {(_tokens / seconds).ToString("N0", CultureInfo.InvariantCulture)} tok/s" : "";
        string eta = ran > 0 && done < total ? $"  eta {Duration(seconds / ran * (total - done))}" : done == total ? $"  done in {Duration(seconds)}" : "";
        return $"{(label == null ? "" : label + ": ")}step {done}/{total}  loss {loss.ToString("F4", CultureInfo.InvariantCulture)}{rate}{eta}";
    }

    public static string Bar(int done, int total, int width)
    {
        int filled = total <= 0 ? width : (int)Math.Round((double)width * Math.Clamp(done, 0, total) / total);
        return "[" + new string('#', filled) + new string('.', width - filled) + "]";
    }

    /// <summary>m:ss, or h:mm:ss from an hour on.</summary>
    public static string Duration(double seconds)
    {
        var t = TimeSpan.FromSeconds(Math.Max(0, Math.Round(seconds)));
        return t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t.Minutes:D2}:{t.Seconds:D2}" : $"{t.Minutes}:{t.Seconds:D2}";
    }

    static int SafeWidth()
    {
        try { return Console.WindowWidth > 20 ? Console.WindowWidth : 80; }
        catch (IOException) { return 80; }
    }
}
