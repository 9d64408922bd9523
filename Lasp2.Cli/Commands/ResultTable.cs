using Lasp2.Research.Verification;
using Spectre.Console;

namespace Lasp2.Cli.Commands;

/// <summary>Renders verification results and turns them into an exit code.</summary>
static class ResultTable
{
    public static Table Build(string title, IEnumerable<CheckResult> results)
    {
        var table = new Table().Title(title).AddColumns("check", "quantity", "max abs error", "max rel error", "tolerance", "result");
        foreach (var r in results)
            table.AddRow(Markup.Escape(r.Name), r.Quantity, r.Error.MaxAbs.ToString("0.00e+00"),
                r.Error.MaxRel.ToString("0.00e+00"), r.Tolerance.ToString("0e+00"),
                r.Passed ? "[green]pass[/]" : r.Elements == 0 ? "[red]FAIL (compared nothing)[/]" : "[red]FAIL[/]");
        return table;
    }

    /// <summary>Prints the totals; 0 when every check passed, 1 otherwise.</summary>
    public static int Summarize(IReadOnlyCollection<CheckResult> results)
    {
        if (results.Count == 0)
        {
            AnsiConsole.MarkupLine("[red]no check ran: every selected configuration is not applicable[/]");
            return 1;
        }
        int failed = results.Count(r => !r.Passed), empty = results.Count(r => r.Elements == 0);
        AnsiConsole.MarkupLine(CheckResult.AllPassed(results)
            ? $"[green]all {results.Count} checks passed[/]"
            : $"[red]{failed} of {results.Count} checks failed{(empty > 0 ? $" ({empty} compared nothing)" : "")}[/]");
        return CheckResult.AllPassed(results) ? 0 : 1;
    }
}
