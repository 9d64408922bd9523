using System.Globalization;
using Lasp2.Reference;
using Lasp2.Research.Verification;
using Spectre.Console;

namespace Lasp2.Cli.Commands;

/// <summary>`lasp2 verify --comm`: rank 0's measured communication next to the analytic model, per method and kind.</summary>
static class CommTable
{
    /// <summary>The table, and one check per configuration (relative error 0 when every kind matches exactly, else infinite).</summary>
    public static (Table Table, IReadOnlyList<CheckResult> Checks) Build(IEnumerable<DistributedReport> reports, string backend)
    {
        var table = new Table()
            .Title($"Communication per layer, rank 0, forward + backward ({backend}): measured vs CommModel (bytes, ring accounting)")
            .AddColumns("method", "W", "mask", "layout", "kind", "calls", "model", "sent", "model", "received", "model",
                        "steps fwd/bwd (model)", "result");
        var checks = new List<CheckResult>();
        foreach (var report in reports)
        {
            var c = report.Config;
            var rows = CommChecks.Compare(report, rank: 0);
            var (forward, backward) = CommChecks.Steps(c);
            // No collective at all is compared too: the model must also predict none.
            var compared = rows.DefaultIfEmpty(new CommComparison("none", 0, 0, 0, 0, 0, 0)).ToList();
            foreach (var row in compared)
                table.AddRow(c.Method, Number(c.WorldSize), c.Causal ? "causal" : "none", c.Layout.ToString().ToLowerInvariant(), row.Kind,
                    Number(row.MeasuredCalls), Number(row.PredictedCalls), Number(row.MeasuredSent), Number(row.PredictedSent),
                    Number(row.MeasuredReceived), Number(row.PredictedReceived), $"{forward}/{backward}",
                    row.Matches ? "[green]match[/]" : "[red]MISMATCH[/]");
            bool matches = rows.All(r => r.Matches);
            checks.Add(new CheckResult(c.Label, "comm",
                matches ? new ErrorStats(0, 0) : new ErrorStats(double.PositiveInfinity, double.PositiveInfinity), 0,
                Elements: 3L * compared.Count));                                       // calls, sent, received per kind
        }
        return (table, checks);
    }

    static string Number(long value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
