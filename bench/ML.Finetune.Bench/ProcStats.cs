namespace ML.Finetune.Bench;

/// <summary>Per-process figures from /proc (Linux): peak RSS (VmHWM) and minor page faults (field 10 of /proc/self/stat).</summary>
static class ProcStats
{
    public static double PeakRssMiB() => StatusKiB("VmHWM:") / 1024.0;
    public static double RssMiB() => StatusKiB("VmRSS:") / 1024.0;

    static long StatusKiB(string key)
    {
        if (!File.Exists("/proc/self/status")) return -1;
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key)) return long.Parse(line[key.Length..].Trim().Split(' ')[0]);
        return -1;
    }

    /// <summary>Minor faults of the whole process (all threads) so far.</summary>
    public static long MinorFaults()
    {
        if (!File.Exists("/proc/self/stat")) return -1;
        string s = File.ReadAllText("/proc/self/stat");
        // comm (field 2) may contain spaces: split after the closing parenthesis. minflt is field 10.
        var rest = s[(s.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(rest[10 - 3]);
    }
}

/// <summary>Peaks of RssAnon and RssFile (/proc/self/status), sampled every 50 ms on a background thread.</summary>
sealed class MemorySampler : IDisposable
{
    readonly Thread _thread;
    volatile bool _stop;
    long _anon, _file;

    public MemorySampler()
    {
        _thread = new Thread(() => { while (!_stop) { Sample(); Thread.Sleep(50); } }) { IsBackground = true };
        _thread.Start();
    }

    void Sample()
    {
        long anon = 0, file = 0;
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("RssAnon:")) anon = long.Parse(line[8..].Trim().Split(' ')[0]);
            else if (line.StartsWith("RssFile:")) file = long.Parse(line[8..].Trim().Split(' ')[0]);
        }
        _anon = Math.Max(_anon, anon); _file = Math.Max(_file, file);
    }

    public (double AnonMiB, double FileMiB) Stop()
    {
        _stop = true;
        _thread.Join();
        Sample();
        return (_anon / 1024.0, _file / 1024.0);
    }

    public void Dispose() { _stop = true; }
}
