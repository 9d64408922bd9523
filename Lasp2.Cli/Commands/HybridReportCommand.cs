using System.ComponentModel;
using System.Globalization;
using Lasp2.Research.Model;
using Microsoft.Data.Analysis;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 hybrid-report`: the hybrid-ratio study's results (data/run-hybrid-study.sh) as a summary, the comparison with
/// the paper's Table 2 / Table 4, and two charts (data/hybrid-ratio.html, data/hybrid-ratio-final.html).
/// </summary>
public sealed class HybridReportCommand : Command<HybridReportCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--data <DIR>"), Description("Folder with hybrid-ratio.csv, hybrid-ratio-curves.csv and published-convergence.csv; the charts go there. Default data.")]
        public string Data { get; init; } = "data";

        public override ValidationResult Validate() => Lasp2App.Validate(() =>
        {
            foreach (var file in new[] { "hybrid-ratio.csv", "hybrid-ratio-curves.csv", "published-convergence.csv" })
                if (!File.Exists(Path.Combine(Data, file)))
                    throw new ArgumentException($"--data = '{Data}' has no {file} (run data/run-hybrid-study.sh).", "--data");
        });
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var runs = HybridStudy.LoadRuns(Path.Combine(settings.Data, "hybrid-ratio.csv"));
        var published = HybridStudy.Published(Path.Combine(settings.Data, "published-convergence.csv"));
        Print("hybrid-ratio study: held-out loss per pattern", HybridStudy.Summary(runs));
        Print("next to the paper (basic linear attention; gap closed: 0 = as pure linear, 1 = as all softmax)", HybridStudy.Comparison(runs, published));
        var ours = HybridStudy.Patterns.ToDictionary(p => p, p => runs.Where(r => r.Pattern == p).Average(r => r.HeldOut));
        var paperPatterns = HybridStudy.Patterns.Where(p => !double.IsNaN(published[p])).ToList();
        AnsiConsole.MarkupLine(Markup.Escape($"ours, best first: {HybridStudy.Order(ours, HybridStudy.Patterns)}; paper: {HybridStudy.Order(published, paperPatterns)}"));
        HybridStudy.Curves(HybridStudy.LoadCurves(Path.Combine(settings.Data, "hybrid-ratio-curves.csv"))).SaveHtml(Path.Combine(settings.Data, "hybrid-ratio.html"));
        HybridStudy.Finals(runs).SaveHtml(Path.Combine(settings.Data, "hybrid-ratio-final.html"));
        AnsiConsole.MarkupLine(Markup.Escape($"charts: {Path.Combine(settings.Data, "hybrid-ratio.html")}, {Path.Combine(settings.Data, "hybrid-ratio-final.html")}"));
        return 0;
    }

    static void Print(string title, DataFrame frame)
    {
        var table = new Table().Title(Markup.Escape(title));
        foreach (var column in frame.Columns) table.AddColumn(Markup.Escape(column.Name));
        foreach (var row in frame.Rows)
            table.AddRow(row.Select(v => Markup.Escape(v is double d ? d.ToString("0.####", CultureInfo.InvariantCulture) : v?.ToString() ?? "")).ToArray());
        AnsiConsole.Write(table);
    }
}
