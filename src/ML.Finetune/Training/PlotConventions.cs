using System.Globalization;
using ScottPlot;

namespace ML.Finetune.Training;

/// <summary>
/// The conventions of every plot we draw (training history, learning-rate sweeps, the samples' reports): legends in a
/// panel outside the data area, learning rates on a log axis labelled with their real values, percentages with room
/// above 100% so a full bar never sits on the frame.
/// </summary>
public static class PlotConventions
{
    /// <summary>Shows the legend in its own panel to the right of the data area, where it cannot cover data.</summary>
    public static void LegendOutside(Plot plot) => plot.ShowLegend(Edge.Right);

    /// <summary>Where a learning rate goes on a <see cref="LogLearningRateAxis"/>: log10 of it.</summary>
    public static double LogPosition(double learningRate) => Math.Log10(learningRate);

    /// <summary>
    /// Makes the bottom axis a log10 learning-rate axis for the given values (plot them at <see cref="LogPosition"/>): ticks
    /// at 1·10^k and 3·10^k labelled "1e-4", "3e-4", … over the values' range, with half a decade of margin.
    /// </summary>
    public static void LogLearningRateAxis(Plot plot, IEnumerable<double> learningRates, string label = "learning rate (log scale)")
    {
        var logs = learningRates.Where(v => v > 0 && double.IsFinite(v)).Select(LogPosition).ToList();
        if (logs.Count == 0) return;
        double lo = logs.Min() - 0.25, hi = logs.Max() + 0.25;
        var ticks = new List<(double Position, string Label)>();
        for (int k = (int)Math.Floor(lo); k <= (int)Math.Ceiling(hi); k++)
            foreach (int m in new[] { 1, 3 })
            {
                double pos = k + Math.Log10(m);
                if (pos >= lo && pos <= hi) ticks.Add((pos, LearningRateLabel(m, k)));
            }
        if (ticks.Count < 2) // a narrow range: label the values themselves
            ticks = logs.Distinct().Select(p => (p, Math.Pow(10, p).ToString("G2", CultureInfo.InvariantCulture))).ToList();
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks.Select(t => t.Position).ToArray(), ticks.Select(t => t.Label).ToArray());
        plot.Axes.SetLimitsX(lo, hi);
        plot.XLabel(label);
    }

    /// <summary>"3e-4" for m = 3, k = -4; plain numbers from 1 up.</summary>
    public static string LearningRateLabel(int mantissa, int exponent) =>
        exponent >= 0 ? (mantissa * Math.Pow(10, exponent)).ToString(CultureInfo.InvariantCulture) : $"{mantissa}e{exponent}";

    /// <summary>A 0–100% left axis with ticks every 20% and headroom above 100%, so full bars and value labels stay clear of the frame.</summary>
    public static void PercentAxis(Plot plot, string label)
    {
        var ticks = Enumerable.Range(0, 6).Select(i => i * 20.0).ToArray();
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks, ticks.Select(t => $"{t:0}%").ToArray());
        plot.Axes.SetLimitsY(0, 112);
        plot.YLabel(label);
    }
}
