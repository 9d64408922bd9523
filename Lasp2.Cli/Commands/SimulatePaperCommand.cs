using Lasp2.Reference;
using System.ComponentModel;
using System.Globalization;
using Lasp2.Charts;
using Lasp2.Research.Simulation;
using Microsoft.Data.Analysis;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 simulate-paper`: the paper's Fig. 3, Table 5 and Table 6 predicted next to the published numbers
/// (data/simulate-paper.csv and charts), and the frontier of the fastest method over (N, W, network)
/// (data/simulate-frontier.csv and chart).
/// </summary>
public sealed class SimulatePaperCommand : Command<SimulatePaperCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--topology <NAME>"), Description("Topology the paper's runs are predicted on (stored name or .json path). Default a100-dgx.")]
        public string Topology { get; init; } = "a100-dgx";

        [CommandOption("--frontier-topologies <LIST>"), Description("Topologies of the frontier, comma-separated. Default a100-dgx,h100-dgx,ethernet-100g.")]
        public string FrontierTopologies { get; init; } = "a100-dgx,h100-dgx,ethernet-100g";

        [CommandOption("--data <DIR>"), Description("Folder with published-*.csv, and where the results go. Default data.")]
        public string Data { get; init; } = "data";

        public override ValidationResult Validate() => Lasp2App.Validate(() =>
        {
            if (!Directory.Exists(Data)) throw new ArgumentException($"--data = '{Data}' is not a folder.", "--data");
            _ = SimulateCommand.ResolveTopology(Topology);
            foreach (var t in Research.Bench.SweepArguments.List(FrontierTopologies)) _ = SimulateCommand.ResolveTopology(t, "--frontier-topologies");
        });
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var topology = SimulateCommand.ResolveTopology(settings.Topology);
        var frontierTopologies = Research.Bench.SweepArguments.List(settings.FrontierTopologies)
                                         .Select(t => SimulateCommand.ResolveTopology(t, "--frontier-topologies")).ToList();
        var (calibrated, overhead, rows, fig3) = PaperFigures.Predict(topology, settings.Data);
        string F(double x, string format) => double.IsNaN(x) ? "-" : x.ToString(format, CultureInfo.InvariantCulture);
        var table = new Table().Title($"the paper predicted on {topology.Name} (fitted: efficiency {F(calibrated.Device.Efficiency, "0.000")}, fixed {F(overhead, "0.000")} s per iteration)");
        foreach (var c in new[] { "figure", "method", "W", "N", "chunks", "quantity", "predicted", "published" }) table.AddColumn(c);
        foreach (var r in rows.Where(r => r.Figure != "fig3"))
            table.AddRow(r.Figure, r.Method, r.Gpus.ToString(CultureInfo.InvariantCulture), r.Seq.ToString(CultureInfo.InvariantCulture),
                         r.Chunks.ToString(CultureInfo.InvariantCulture), r.Quantity, F(r.Predicted, "0.###"), F(r.Published, "0.###"));
        AnsiConsole.Write(table);
        var paper = new DataFrame(
            new StringDataFrameColumn("figure", rows.Select(r => r.Figure)), new StringDataFrameColumn("method", rows.Select(r => r.Method)),
            new Int32DataFrameColumn("gpus", rows.Select(r => r.Gpus)), new Int64DataFrameColumn("seq", rows.Select(r => r.Seq)),
            new Int32DataFrameColumn("chunks", rows.Select(r => r.Chunks)), new StringDataFrameColumn("quantity", rows.Select(r => r.Quantity)),
            new DoubleDataFrameColumn("predicted", rows.Select(r => r.Predicted)), new DoubleDataFrameColumn("published", rows.Select(r => r.Published)),
            new StringDataFrameColumn("note", rows.Select(r => r.Note)));
        SimulationTable.Save(paper, Path.Combine(settings.Data, "simulate-paper.csv"));
        var table6 = rows.Where(r => r.Figure == "table6" && r.Quantity == "tokens_per_s" && r.Gpus == 64 && double.IsFinite(r.Published)).ToList();
        var spec = SimulationTable.Throughput(fig3,
            $"Fig. 3 predicted: tokens/s at 64 GPUs, Linear-Llama3-1B, {topology.Name} (fitted efficiency {F(calibrated.Device.Efficiency, "0.000")}, fixed {F(overhead, "0.00")} s)").Spec;
        var published = new Series("published lasp2 (Table 6, W=64)", table6.Select(r => (double)r.Seq).ToArray(), table6.Select(r => r.Published).ToArray());
        new Figure(spec with { Series = [.. spec.Series, published] }).SaveHtml(Path.Combine(settings.Data, "simulate-paper.html"));

        var frontier = new List<FrontierPoint>();
        AnsiConsole.Progress().Columns(new TaskDescriptionColumn(), new ElapsedTimeColumn()).Start(progress =>
        {
            var task = progress.AddTask("frontier");
            frontier.AddRange(Frontier.Compute(frontierTopologies, [8, 16, 32, 64, 128], [16L << 10, 64L << 10, 256L << 10, 1L << 20, 4L << 20],
                                               label => task.Description = Markup.Escape(label)));
        });
        var frame = new DataFrame(
            new StringDataFrameColumn("topology", frontier.Select(p => p.Topology)), new StringDataFrameColumn("kind", frontier.Select(p => p.Kind)),
            new Int32DataFrameColumn("gpus", frontier.Select(p => p.Gpus)), new Int64DataFrameColumn("seq", frontier.Select(p => p.Seq)),
            new StringDataFrameColumn("fastest", frontier.Select(p => p.Fastest)), new DoubleDataFrameColumn("seconds", frontier.Select(p => p.Seconds)),
            new StringDataFrameColumn("runner_up", frontier.Select(p => p.RunnerUp)), new DoubleDataFrameColumn("margin", frontier.Select(p => p.Margin)));
        SimulationTable.Save(frame, Path.Combine(settings.Data, "simulate-frontier.csv"));
        // One marker per (topology, kind, W, N) at x = N, y = W, nudged by topology so the three networks sit side by side.
        var offsets = frontierTopologies.Select((t, i) => (t.Name, Factor: Math.Pow(1.25, i - (frontierTopologies.Count - 1) / 2.0)))
                                        .ToDictionary(p => p.Name, p => p.Factor);
        var series = frontier.GroupBy(p => (p.Topology, p.Kind, p.Fastest))
            .Select(g => new Series($"{g.Key.Topology} {g.Key.Kind}: {g.Key.Fastest}", g.Select(p => (double)p.Seq * offsets[p.Topology]).ToArray(),
                                    g.Select(p => (double)p.Gpus * (g.Key.Kind == "linear" ? 1 : 1.12)).ToArray()))
            .ToArray();
        Chart.Scatter("Fastest method per layer kind over (N, W, network) (x nudged per network, softmax y nudged up)",
                              "sequence length N", "GPUs W", series).WithLogX().WithLogY()
              .SaveHtml(Path.Combine(settings.Data, "simulate-frontier.html"));
        foreach (var g in frontier.GroupBy(p => (p.Topology, p.Kind)))
            AnsiConsole.MarkupLine(Markup.Escape($"{g.Key.Topology} {g.Key.Kind}: " +
                string.Join(", ", g.GroupBy(p => p.Fastest).Select(f => $"{f.Key} fastest at {f.Count()} of {g.Count()} points"))));
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(settings.Data)}/simulate-paper.csv, simulate-paper.html, simulate-frontier.csv, simulate-frontier.html");
        return 0;
    }
}
