using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using ML.Finetune.TestComponents;
using ML.Finetune.Testing;

namespace ML.Finetune.Tests.Foundation;

public class PersistenceRoundTripTests
{
    private sealed class Row
    {
        public float A { get; set; }
        public float B { get; set; }
        public float C { get; set; }
    }

    private static (MLContext ml, IDataView data) Data()
    {
        var ml = new MLContext(seed: 1);
        var rows = Enumerable.Range(0, 7).Select(i => new Row { A = i * 0.37f, B = -i / 3f, C = MathF.Sqrt(i + 0.5f) }).ToArray();
        return (ml, ml.Data.LoadFromEnumerable(rows));
    }

    [Fact]
    public void ConcatenateThenOursThenNormalize_SavesAndLoadsInAFreshProcess_BitIdentical()
    {
        var (ml, data) = Data();
        var ours = new ScaleShiftTransformer(new[] { 1.5f, -2f, 0.25f }, new ScaleShiftConfig("Features", "Scaled", 0.125f));
        var model = ml.Transforms.Concatenate("Features", "A", "B", "C").Fit(data)
            .Append(ours);
        var normalizer = ml.Transforms.NormalizeMinMax("Normalized", "Scaled").Fit(model.Transform(data));
        var chain = model.Append(normalizer);
        string expected = DataViewDump.ToJson(chain.Transform(data));
        Assert.Contains("Normalized", expected);

        string dir = Directory.CreateTempSubdirectory("mlft-persist").FullName;
        try
        {
            string zip = Path.Combine(dir, "model.zip"), idv = Path.Combine(dir, "input.idv"), outJson = Path.Combine(dir, "out.json");
            ml.Model.Save(chain, data.Schema, zip);
            using (var fs = File.Create(idv)) ml.Data.SaveAsBinary(data, fs);
            RunProbe(zip, idv, outJson);
            Assert.Equal(expected, File.ReadAllText(outJson));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void WithoutIgnoresAccessChecksTo_SavingFailsWithMethodAccessException()
    {
        var (ml, data) = Data();
        var noAccess = new ML.Finetune.TestComponents.NoAccess.ScaleShiftTransformer(
            new[] { 1f, 1f, 1f }, new ML.Finetune.TestComponents.NoAccess.ScaleShiftConfig("Features", "Scaled", 0f));
        var chain = ml.Transforms.Concatenate("Features", "A", "B", "C").Fit(data).Append(noAccess);
        using var ms = new MemoryStream();
        var ex = Record.Exception(() => ml.Model.Save(chain, data.Schema, ms));
        Assert.NotNull(ex);
        var chainOfCauses = new List<Exception>();
        for (var e = ex; e != null; e = e.InnerException) chainOfCauses.Add(e);
        Assert.Contains(chainOfCauses, e => e is MethodAccessException);
    }

    internal static void RunProbe(string zip, string idv, string outJson)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { BuildInfo.LoadProbePath, zip, idv, outJson }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string stderr = p.StandardError.ReadToEnd();
        p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "the load probe did not finish in 2 minutes");
        Assert.True(p.ExitCode == 0, $"load probe failed ({p.ExitCode}): {stderr}");
    }
}
