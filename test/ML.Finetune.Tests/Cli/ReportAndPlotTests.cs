using ML.Finetune.Samples.Cli;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Training;
using ScottPlot;
using Spectre.Console;

namespace ML.Finetune.Tests.Cli;

/// <summary>What users read: plots (legends outside, log learning-rate axis, labelled bars), the console table, history.csv, --help.</summary>
public class ReportAndPlotTests
{
    static TrainingRecord Rec(int step, double ce, double penalty, double val = double.NaN) =>
        new(step, ce + penalty, ce, penalty, 0, Math.Sqrt(penalty), 1e-4 * step, 1.5, val);

    static RunResult Run(string method, string init, double lr, double test, double penalty = 0) =>
        new(method, init, lr, test, 1.0, 2.8134, 0.16235, 886_272, 12.34,
            Enumerable.Range(0, 30).Select(i => Rec(i, 3.0 / (i + 1), penalty * i / 30)).ToList(), []);

    static MainJobResult Result()
    {
        var facts = FactCorpus.Load(Commands.DefaultFacts);
        var runs = new List<RunResult>();
        foreach (var m in FinetuneMethods.All)
        {
            runs.Add(Run(m.Name, Samples.Experiment.MainJob.Pretrained, m.DefaultLearningRate, 0.959, m.Name == "full+l2" ? 0.02 : m.Name == "full+kl" ? 0.003 : 0));
            runs.Add(Run(m.Name, Samples.Experiment.MainJob.Random, m.DefaultLearningRate, 0.0));
        }
        var sweep = new[] { 1e-4, 3e-4, 1e-3, 3e-3 }.Select((lr, i) => Run("full", Samples.Experiment.MainJob.Pretrained, lr, 0.98 - 0.3 * i)).ToList();
        var options = new MainJobOptions { ModelFolder = Commands.DefaultModelFolder, Facts = facts, OutFolder = "out" };
        return new MainJobResult(options, runs, sweep, 0.1, 0.0, 100, "cpu");
    }

    /// <summary>Manual ticks are generated when the plot renders, as in a saved PNG.</summary>
    static ScottPlot.Tick[] Ticks(Plot p, IAxis axis)
    {
        p.GetImage(900, 450).Dispose();
        return ((ScottPlot.TickGenerators.NumericManual)axis.TickGenerator).Ticks;
    }

    static bool LegendOutside(Plot p) => !p.Legend.IsVisible && p.Axes.GetPanels().OfType<ScottPlot.Panels.LegendPanel>().Any();

    [Fact]
    public void History_csv_leaves_unevaluated_validation_cells_empty_and_reads_them_back()
    {
        var h = new TrainingHistory();
        h.Add(Rec(0, 2.5, 0));
        h.Add(Rec(1, 2.0, 0, val: 2.25));
        var lines = h.ToCsv().Split('\n');
        Assert.EndsWith(",", lines[1]);
        Assert.DoesNotContain("NaN", h.ToCsv());
        Assert.EndsWith(",2.25", lines[2]);
        var back = TrainingHistory.FromCsv(h.ToCsv());
        Assert.True(double.IsNaN(back.Records[0].ValLoss));
        Assert.Equal(2.25, back.Records[1].ValLoss);
        Assert.Equal(h.ToCsv(), back.ToCsv());
    }

    [Fact]
    public void The_library_loss_plot_keeps_its_legend_outside_and_shows_the_penalty_when_there_is_one()
    {
        var h = new TrainingHistory();
        for (int i = 0; i < 10; i++) h.Add(Rec(i, 2.0 / (i + 1), 0.01 * i));
        var plot = h.LossPlot();
        Assert.True(LegendOutside(plot));
        var series = plot.GetPlottables<ScottPlot.Plottables.Scatter>().ToList();
        Assert.Equal(["train loss (objective)", "cross-entropy", "penalty (right axis)"], series.Select(s => s.LegendText));
        Assert.Same(plot.Axes.Right, series[2].Axes.YAxis);
        var plain = new TrainingHistory();
        plain.Add(Rec(0, 2.0, 0));
        Assert.Single(plain.LossPlot().GetPlottables<ScottPlot.Plottables.Scatter>());
    }

    [Fact]
    public void Main_job_plots_label_bars_keep_100_percent_off_the_frame_draw_penalties_and_use_a_real_log_axis()
    {
        var r = Result();
        var acc = ReportWriter.AccuracyPlot(r);
        Assert.True(LegendOutside(acc));
        var bars = acc.GetPlottables<ScottPlot.Plottables.BarPlot>().Single().Bars;
        Assert.Equal(r.Runs.Count, bars.Count);
        Assert.Contains(bars, b => b.Value == 0 && b.Label == "0.0%"); // a 0% bar has no height: its label shows it
        Assert.All(bars, b => Assert.Equal(ReportWriter.Pct(b.Value / 100), b.Label));
        Assert.True(acc.Axes.GetLimits().Top > 105, "room above 100%");
        Assert.Equal("100%", Ticks(acc, acc.Axes.Left).MaxBy(t => t.Position).Label);

        foreach (var (method, term) in new[] { ("full+l2", "L2"), ("full+kl", "KL") })
        {
            var loss = ReportWriter.LossPlot(r.Runs.Where(x => x.Method == method).ToList(), method);
            Assert.True(LegendOutside(loss));
            var penalties = loss.GetPlottables<ScottPlot.Plottables.Scatter>().Where(s => s.Axes.YAxis == loss.Axes.Right).ToList();
            Assert.Equal(2, penalties.Count); // θ_p and θ_0
            Assert.All(penalties, p => Assert.StartsWith($"{term} term", p.LegendText));
            Assert.Contains(term, loss.Axes.Right.Label.Text);
        }
        Assert.DoesNotContain(ReportWriter.LossPlot(r.Runs.Where(x => x.Method == "full").ToList(), "full").GetPlottables<ScottPlot.Plottables.Scatter>(),
            s => s.LegendText.Contains("term"));

        var sweep = ReportWriter.SweepPlot(r.Sweep);
        Assert.True(LegendOutside(sweep));
        var ticks = Ticks(sweep, sweep.Axes.Bottom);
        Assert.Equal(["1e-4", "3e-4", "1e-3", "3e-3"], ticks.Select(t => t.Label));
        Assert.All(ticks, t => Assert.Equal(Math.Log10(double.Parse(t.Label, System.Globalization.CultureInfo.InvariantCulture)), t.Position, 12));
        Assert.True(sweep.Axes.GetLimits().Top > 105);
    }

    [Theory]
    [InlineData(new[] { 1e-5, 5.62e-5, 3.16e-4, 1.78e-3, 1e-2 }, new[] { "1e-5", "3e-5", "1e-4", "3e-4", "1e-3", "3e-3", "1e-2" })]
    [InlineData(new[] { 0.03, 0.3, 3.0 }, new[] { "3e-2", "1e-1", "3e-1", "1", "3" })]
    public void The_learning_rate_axis_labels_real_values(double[] lrs, string[] labels)
    {
        var plot = new Plot();
        PlotConventions.LogLearningRateAxis(plot, lrs);
        Assert.Equal(labels, Ticks(plot, plot.Axes.Bottom).Select(t => t.Label));
    }

    [Fact]
    public void The_console_table_fits_80_columns_without_cutting_anything()
    {
        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Interactive = InteractionSupport.No,
        });
        console.Profile.Width = 80;
        MainJobCommand.PrintTable(Result(), console);
        var lines = writer.ToString().Split('\n');
        Assert.All(lines, l => Assert.True(l.TrimEnd().Length <= 80, $"{l.TrimEnd().Length} columns: {l}"));
        Assert.DoesNotContain("…", writer.ToString());
        string header = lines.First(l => l.Contains("method"));
        foreach (var h in MainJobCommand.TableHeaders) Assert.Contains($" {h} ", header);
        Assert.Contains("886,272", writer.ToString());
        Assert.Contains("full+l2", writer.ToString());
    }

    [Theory]
    [InlineData("finetune")]
    [InlineData("sweep")]
    [InlineData("evaluate")]
    public void Help_names_the_data_fields(string command)
    {
        var r = CliRunner.InProcess(command, "--help");
        Assert.Equal(0, r.ExitCode);
        string help = string.Join(' ', r.Out.Split((char[])[' ', '\n', '\r'], StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("fields \"prompt\" and \"completion\"", help);
        Assert.Contains("header row prompt,completion", help);
    }
}
