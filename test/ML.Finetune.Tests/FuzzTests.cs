using System.Diagnostics;
using System.Text;
using ML.Finetune.Checkpoints;
using ML.Finetune.Models;
using Xunit;

namespace ML.Finetune.Tests;

/// <summary>Seeded mutation fuzzing: every mutant loads or fails with a documented exception type.</summary>
public class FuzzTests
{
    static bool Documented(Exception e) =>
        e is CheckpointFormatException or UnsupportedModelException or FileNotFoundException;

    [Fact]
    public void MutatedSafetensorsHeaders_LoadOrThrowDocumented()
    {
        // A small real file: the fixture's adapter (one tensor) plus a 3-tensor file we write.
        var dir = Fixtures.TempDir();
        var seedFile = Path.Combine(Fixtures.Root, "tiny-llama-lora", "adapter_model.safetensors");
        var original = File.ReadAllBytes(seedFile);
        var rng = new Random(12345);
        var sw = Stopwatch.StartNew();
        var path = Path.Combine(dir, "m.safetensors");
        int headerLen = (int)BitConverter.ToUInt64(original, 0);
        for (int i = 0; i < 1200; i++)
        {
            var bytes = (byte[])original.Clone();
            int kind = rng.Next(5);
            int n = 1 + rng.Next(4);
            for (int j = 0; j < n; j++)
            {
                int pos = kind == 0 ? rng.Next(8) : 8 + rng.Next(headerLen); // length field or header text
                bytes[pos] = kind switch
                {
                    2 => (byte)"0123456789"[rng.Next(10)],
                    3 => (byte)"{}[]\",:-"[rng.Next(8)],
                    _ => (byte)rng.Next(256),
                };
            }
            if (kind == 4) bytes = bytes[..rng.Next(bytes.Length)]; // truncation
            File.WriteAllBytes(path, bytes);
            try { foreach (var t in SafeTensors.Load(path).Values) t.Dispose(); }
            catch (Exception e) when (Documented(e)) { }
            catch (Exception e) { Assert.Fail($"mutant {i} threw {e.GetType().Name}: {e.Message}"); }
        }
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), $"fuzz took {sw.Elapsed}");
    }

    [Fact]
    public void MutatedConfigJson_ParseOrThrowDocumented()
    {
        var text = File.ReadAllText(Path.Combine(Fixtures.Model("tiny-qwen2"), "config.json"));
        var rng = new Random(54321);
        const string alphabet = "{}[]\":,0123456789-.eE truefalsnul\\";
        for (int i = 0; i < 1500; i++)
        {
            var sb = new StringBuilder(text);
            int n = 1 + rng.Next(4);
            for (int j = 0; j < n && sb.Length > 0; j++)
            {
                int pos = rng.Next(sb.Length);
                switch (rng.Next(3))
                {
                    case 0: sb[pos] = alphabet[rng.Next(alphabet.Length)]; break;
                    case 1: sb.Remove(pos, Math.Min(1 + rng.Next(8), sb.Length - pos)); break;
                    default: sb.Insert(pos, alphabet[rng.Next(alphabet.Length)]); break;
                }
            }
            try { CausalLMConfig.Parse(sb.ToString(), "fuzz/config.json"); }
            catch (Exception e) when (Documented(e)) { }
            catch (Exception e) { Assert.Fail($"mutant {i} threw {e.GetType().Name}: {e.Message}\n{sb}"); }
        }
    }
}
