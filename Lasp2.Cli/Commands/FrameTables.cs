using System.Globalization;
using Microsoft.Data.Analysis;
using Spectre.Console;

namespace Lasp2.Cli.Commands;

/// <summary>A Microsoft.Data.Analysis DataFrame as a Spectre table: NaN as "-", whole numbers without decimals, others to 3 decimals.</summary>
static class FrameTables
{
    public static Table Of(string title, DataFrame frame)
    {
        var table = new Table().Title(Markup.Escape(title));
        foreach (var column in frame.Columns) table.AddColumn(column.Name);
        foreach (var row in frame.Rows)
            table.AddRow(row.Select(cell => Markup.Escape(cell switch
            {
                double d when double.IsNaN(d) => "-",
                double d => Math.Abs(d) >= 1000 || d == Math.Floor(d) ? d.ToString("0", CultureInfo.InvariantCulture) : d.ToString("0.###", CultureInfo.InvariantCulture),
                var other => other?.ToString() ?? "",
            })).ToArray());
        return table;
    }
}
