using Lasp2.Reference;
using System.ComponentModel;
using System.Globalization;
using Lasp2.Research.Simulation;
using Microsoft.Data.Analysis;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 simulate-check`: the cluster model with this machine's measured loopback MPI alpha/beta and measured
/// single-device kernel rates predicts the measured MPI runs of a bench CSV; prints and writes the error per run and
/// the median |error| per method.
/// </summary>
public sealed class SimulateCheckCommand : Command<SimulateCheckCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--bench <CSV>"), Description("Bench CSV with MPI runs and single-device (W = 1, in-process) runs of the same shapes. Default data/bench.csv.")]
        public string Bench { get; init; } = "data/bench.csv";

        [CommandOption("--alpha-us <US>"), OptionRange(0, MinimumExclusive = true), Description("Measured MPI latency per message, microseconds (> 0), e.g. from `lasp2 launch -n 2 -- comm-bench`.")]
        public double? AlphaMicroseconds { get; init; }

        [CommandOption("--gbps <GBPS>"), OptionRange(0, MinimumExclusive = true), Description("Measured MPI loopback bandwidth, GB/s (> 0).")]
        public double? Gbps { get; init; }

        [CommandOption("--cores <N>"), OptionRange(1), Description("Cores the ranks shared (>= 1). Default: this machine's.")]
        public int? Cores { get; init; }

        [CommandOption("--out <CSV>"), Description("CSV to write. Default data/simulate-validation.csv.")]
        public string Out { get; init; } = "data/simulate-validation.csv";

        public override ValidationResult Validate() => Lasp2App.Validate(() =>
        {
            if (AlphaMicroseconds is null) throw new ArgumentException("--alpha-us is required: the measured MPI latency per message in microseconds (> 0).", "--alpha-us");
            if (Gbps is null) throw new ArgumentException("--gbps is required: the measured MPI loopback bandwidth in GB/s (> 0).", "--gbps");
            if (!File.Exists(Bench)) throw new ArgumentException($"--bench = '{Bench}' does not exist.", "--bench");
        });
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        int cores = settings.Cores ?? Environment.ProcessorCount;
        double factor = ModelValidation.OneThreadFactor(settings.Bench) ?? double.NaN;
        var rows = ModelValidation.Run(settings.Bench, settings.AlphaMicroseconds!.Value * 1e-6, settings.Gbps!.Value * 1e9, cores, factor);
        if (rows.Count == 0)
        {
            AnsiConsole.MarkupLine("[red]no MPI run in the CSV has a single-device run to take its rate from[/]: nothing was compared.");
            return 1;
        }
        string F(double x, string format) => x.ToString(format, CultureInfo.InvariantCulture);
        var table = new Table().Title($"measured MPI runs vs the model (alpha {F(settings.AlphaMicroseconds!.Value, "0.0")} us, {F(settings.Gbps!.Value, "0.###")} GB/s, {cores} cores, 1-thread factor {(double.IsNaN(factor) ? "not needed" : F(factor, "0.00"))})");
        foreach (var c in new[] { "method", "W", "N", "measured s", "predicted s", "error", "rate GFLOP/s" }) table.AddColumn(c);
        foreach (var r in rows)
            table.AddRow(r.Method, r.WorldSize.ToString(CultureInfo.InvariantCulture), r.Seq.ToString(CultureInfo.InvariantCulture),
                         F(r.MeasuredSeconds, "0.0000"), F(r.PredictedSeconds, "0.0000"), F(100 * r.RelativeError, "+0;-0") + " %", F(r.RateGflops, "0.0"));
        AnsiConsole.Write(table);
        foreach (var (method, error) in ModelValidation.MedianErrors(rows).OrderBy(p => p.Key))
            AnsiConsole.MarkupLine($"{Markup.Escape(method)}: median |error| {F(100 * error, "0")} % over {rows.Count(r => r.Method == method)} runs");
        var frame = new DataFrame(
            new StringDataFrameColumn("method", rows.Select(r => r.Method)),
            new Int32DataFrameColumn("gpus", rows.Select(r => r.WorldSize)),
            new Int64DataFrameColumn("seq", rows.Select(r => r.Seq)),
            new DoubleDataFrameColumn("measured_s", rows.Select(r => r.MeasuredSeconds)),
            new DoubleDataFrameColumn("predicted_s", rows.Select(r => r.PredictedSeconds)),
            new DoubleDataFrameColumn("relative_error", rows.Select(r => r.RelativeError)),
            new DoubleDataFrameColumn("rate_gflops", rows.Select(r => r.RateGflops)));
        SimulationTable.Save(frame, settings.Out);
        AnsiConsole.MarkupLine($"wrote {rows.Count} rows to [bold]{Markup.Escape(settings.Out)}[/]");
        return 0;
    }
}
