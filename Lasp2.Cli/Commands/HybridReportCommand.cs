using System.ComponentModel;
using Lasp2.Research.Model;
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
        AnsiConsole.Write(FrameTables.Of("hybrid-ratio study: held-out loss per pattern", HybridStudy.Summary(runs)));
        AnsiConsole.Write(FrameTables.Of("next to the paper (basic linear attention; gap closed: 0 = as pure linear, 1 = as all softmax)",
                                         HybridStudy.Comparison(runs, published)));
        var ours = HybridStudy.HeldOutMeans(runs);
        var paperPatterns = HybridStudy.Patterns.Where(p => !double.IsNaN(published[p])).ToList();
        AnsiConsole.MarkupLine(Markup.Escape($"ours, best first: {HybridStudy.Order(ours, HybridStudy.Patterns)}; paper: {HybridStudy.Order(published, paperPatterns)}"));
        HybridStudy.Curves(HybridStudy.LoadCurves(Path.Combine(settings.Data, "hybrid-ratio-curves.csv"))).SaveHtml(Path.Combine(settings.Data, "hybrid-ratio.html"));
        HybridStudy.Finals(runs).SaveHtml(Path.Combine(settings.Data, "hybrid-ratio-final.html"));
        AnsiConsole.MarkupLine(Markup.Escape($"charts: {Path.Combine(settings.Data, "hybrid-ratio.html")}, {Path.Combine(settings.Data, "hybrid-ratio-final.html")}"));
        return 0;
    }
}
