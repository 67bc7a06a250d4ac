// MSBuild inline task (RoslynCodeTaskFactory) + the ELF patcher it runs. The library compiles this same file with
// ELF_PATCHER_ONLY defined (its run-time fix, Runtime/TorchNativeLibrary.cs), and the tests call that copy, so they
// exercise exactly the code the build runs.
using System;
using System.IO;
using System.Text;
#if !ELF_PATCHER_ONLY
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

namespace ML.Finetune.Build
{
    public class MLFinetuneMarkGlibcxxWeak : Microsoft.Build.Utilities.Task
    {
        [Required] public ITaskItem[] Files { get; set; } = System.Array.Empty<ITaskItem>();
        [Required] public string VersionName { get; set; } = "";
        /// <summary>Patch even when this machine's libstdc++ has the version (a published app may run elsewhere).</summary>
        public bool Always { get; set; }

        public override bool Execute()
        {
            if (!Always && ElfVersionNeedPatcher.SystemLibStdCxxHas(VersionName))
            {
                Log.LogMessage(MessageImportance.Low, $"System libstdc++ provides {VersionName}; TorchSharp needs no patch.");
                return true;
            }
            foreach (var item in Files)
            {
                var outcome = ElfVersionNeedPatcher.MarkWeak(item.ItemSpec, VersionName);
                Log.LogMessage(MessageImportance.Low, $"{item.ItemSpec}: {VersionName} need -> {outcome}");
            }
            return !Log.HasLoggedErrors;
        }
    }
}
#endif

namespace ML.Finetune.Build
{
    internal static class ElfVersionNeedPatcher
    {
        public const ushort VerFlagWeak = 0x2;
        private const uint ShtGnuVerneed = 0x6ffffffe;

        public enum Outcome { Patched, AlreadyWeak, NotFound }

        /// <summary>Patches <paramref name="path"/> in place. Returns what it did; throws InvalidDataException on a malformed file.</summary>
        public static Outcome MarkWeak(string path, string versionName)
        {
            byte[] bytes = File.ReadAllBytes(path);
            long flagsOffset = FindVernauxFlagsOffset(bytes, versionName, path);
            if (flagsOffset < 0) return Outcome.NotFound;
            ushort flags = BitConverter.ToUInt16(bytes, (int)flagsOffset);
            if ((flags & VerFlagWeak) != 0) return Outcome.AlreadyWeak;
            ushort patched = (ushort)(flags | VerFlagWeak);
            // Write only the two flag bytes, through a temp copy renamed over the original, so a crash never leaves half a file.
            string tmp = path + ".weakpatch.tmp";
            File.Copy(path, tmp, overwrite: true);
            using (var fs = new FileStream(tmp, FileMode.Open, FileAccess.Write))
            {
                fs.Position = flagsOffset;
                fs.WriteByte((byte)(patched & 0xff));
                fs.WriteByte((byte)(patched >> 8));
            }
            File.Replace(tmp, path, null); // a rename: netstandard2.0 (the inline-task target) has no File.Move overwrite
            return Outcome.Patched;
        }

        /// <summary>File offset of vna_flags for the named version need, or -1 when the file has no such entry.</summary>
        public static long FindVernauxFlagsOffset(byte[] b, string versionName, string fileNameForErrors)
        {
            if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
                throw new InvalidDataException($"{fileNameForErrors}: not an ELF file.");
            if (b[4] != 2 || b[5] != 1)
                throw new InvalidDataException($"{fileNameForErrors}: only ELF64 little-endian is supported.");
            ulong shoff = U64(b, 0x28, fileNameForErrors);
            ushort shentsize = U16(b, 0x3A, fileNameForErrors);
            ushort shnum = U16(b, 0x3C, fileNameForErrors);
            if (shentsize < 64) throw new InvalidDataException($"{fileNameForErrors}: section header size {shentsize} is too small.");
            for (int i = 0; i < shnum; i++)
            {
                long sh = checked((long)shoff + (long)i * shentsize);
                if (U32(b, sh + 4, fileNameForErrors) != ShtGnuVerneed) continue;
                long secOffset = (long)U64(b, sh + 0x18, fileNameForErrors);
                uint link = U32(b, sh + 0x28, fileNameForErrors);
                uint count = U32(b, sh + 0x2C, fileNameForErrors);
                long strSh = checked((long)shoff + (long)link * shentsize);
                long strOffset = (long)U64(b, strSh + 0x18, fileNameForErrors);
                long vn = secOffset;
                for (uint n = 0; n < count; n++)
                {
                    ushort vnCnt = U16(b, vn + 2, fileNameForErrors);
                    uint vnAux = U32(b, vn + 8, fileNameForErrors);
                    uint vnNext = U32(b, vn + 12, fileNameForErrors);
                    long aux = vn + vnAux;
                    for (int a = 0; a < vnCnt; a++)
                    {
                        uint name = U32(b, aux + 8, fileNameForErrors);
                        if (ReadCString(b, strOffset + name, fileNameForErrors) == versionName) return aux + 4;
                        uint next = U32(b, aux + 12, fileNameForErrors);
                        if (next == 0) break;
                        aux += next;
                    }
                    if (vnNext == 0) break;
                    vn += vnNext;
                }
            }
            return -1;
        }

        private static void Check(byte[] b, long at, int len, string f)
        {
            if (at < 0 || at + len > b.Length) throw new InvalidDataException($"{f}: ELF structure points outside the file (offset {at}).");
        }
        private static ushort U16(byte[] b, long at, string f) { Check(b, at, 2, f); return BitConverter.ToUInt16(b, (int)at); }
        private static uint U32(byte[] b, long at, string f) { Check(b, at, 4, f); return BitConverter.ToUInt32(b, (int)at); }
        private static ulong U64(byte[] b, long at, string f) { Check(b, at, 8, f); return BitConverter.ToUInt64(b, (int)at); }
        private static string ReadCString(byte[] b, long at, string f)
        {
            Check(b, at, 1, f);
            long end = at;
            while (end < b.Length && b[end] != 0) end++;
            return Encoding.ASCII.GetString(b, (int)at, (int)(end - at));
        }

        /// <summary>True when the system's libstdc++ already provides the version (then no patch is needed).</summary>
        public static bool SystemLibStdCxxHas(string versionName)
        {
            string[] candidates =
            {
                "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
                "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            };
            foreach (var c in candidates)
            {
                if (!File.Exists(c)) continue;
                byte[] needle = Encoding.ASCII.GetBytes(versionName + "\0");
                byte[] hay = File.ReadAllBytes(c);
                return IndexOf(hay, needle) >= 0;
            }
            return false; // unknown system: patching is harmless (a weak need only warns), so do it.
        }

        private static int IndexOf(byte[] hay, byte[] needle)
        {
            for (int i = 0; i <= hay.Length - needle.Length; i++)
            {
                int j = 0;
                while (j < needle.Length && hay[i + j] == needle[j]) j++;
                if (j == needle.Length) return i;
            }
            return -1;
        }
    }
}
