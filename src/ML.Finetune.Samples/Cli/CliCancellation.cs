using System.Runtime.InteropServices;

namespace ML.Finetune.Samples.Cli;

/// <summary>
/// Ctrl-C (SIGINT) and SIGTERM. The first signal asks the running command to stop at its next safe point (a training
/// step boundary, where a checkpoint is written, or between the files of a save) through <see cref="Token"/>; the
/// command then removes its temporary files and exits 130. A second signal stops at once: it runs the registered
/// cleanups itself and exits 130 — but never while an output folder is being committed (a few renames), so the
/// folder always holds either its old or its new contents.
/// </summary>
public static class CliCancellation
{
    public const int ExitCode = 130;
    static readonly CancellationTokenSource Source = new();
    static readonly object CommitLock = new();
    static readonly List<Action> Cleanups = new();
    static readonly List<PosixSignalRegistration> Registrations = new();
    static int _signals;
    static TextWriter _messages = Console.Error;

    /// <summary>Cancelled by the first signal (never, unless <see cref="Install"/> ran: tests run commands in-process).</summary>
    public static CancellationToken Token => Source.Token;

    /// <summary>Handles SIGINT and SIGTERM for the rest of the process (the CLI's entry point calls it once).</summary>
    public static void Install(TextWriter messages)
    {
        _messages = messages;
        lock (Registrations)
        {
            if (Registrations.Count > 0) return;
            foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
                Registrations.Add(PosixSignalRegistration.Create(signal, OnSignal));
        }
    }

    static void OnSignal(PosixSignalContext context)
    {
        context.Cancel = true; // we exit ourselves, after cleaning up
        if (Interlocked.Increment(ref _signals) == 1)
        {
            _messages.WriteLine($"{Environment.NewLine}stopping at the next safe point (a step boundary or between saved files); signal again to stop at once");
            Source.Cancel();
            return;
        }
        lock (CommitLock)
        {
            Action[] cleanups;
            lock (Cleanups) cleanups = Cleanups.ToArray();
            foreach (var c in cleanups)
                try { c(); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            _messages.WriteLine("stopped; temporary files removed");
            _messages.Flush();
            Console.Out.Flush();
            // Straight out: a managed shutdown while libtorch threads still compute can crash (seen: SIGSEGV in exit handlers).
            if (OperatingSystem.IsWindows()) Environment.Exit(ExitCode);
            else ExitNow(ExitCode);
        }
    }

    [DllImport("libc", EntryPoint = "_exit")]
    static extern void ExitNow(int status);

    /// <summary>Registers what a forced stop must clean up (the command does it itself otherwise); dispose to unregister.</summary>
    public static IDisposable OnForcedStop(Action cleanup)
    {
        lock (Cleanups) Cleanups.Add(cleanup);
        return new Unregister(cleanup);
    }

    sealed class Unregister(Action cleanup) : IDisposable
    {
        public void Dispose() { lock (Cleanups) Cleanups.Remove(cleanup); }
    }

    /// <summary>Runs <paramref name="commit"/> with forced stops held back until it is done.</summary>
    public static T Uninterruptible<T>(Func<T> commit) { lock (CommitLock) return commit(); }

    public static void Uninterruptible(Action commit) { lock (CommitLock) commit(); }

    /// <summary>Removes a file or folder (a symbolic link itself, never its target); missing is fine.</summary>
    public static void Delete(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget != null || File.Exists(path)) File.Delete(path);
        else if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
    }
}
