using System.Globalization;
using System.Net;
using System.Reflection;
using System.Text;
using Microsoft.Data.Analysis;

namespace Lasp2.Notebooks;

/// <summary>
/// Rows of any record type shown as a table: HTML in a notebook cell (setup.csx registers the
/// formatter), aligned text from <see cref="ToString"/>. Columns are the public properties, in order.
/// Doubles print with 4 significant digits, or in scientific notation below 1e-3 (errors).
/// </summary>
public sealed class Table
{
    readonly string[] columns;
    readonly List<string[]> rows;

    Table(string[] columns, List<string[]> rows) => (this.columns, this.rows) = (columns, rows);

    public static Table Of<T>(IEnumerable<T> items)
    {
        var properties = typeof(T).GetProperties(BindingFlags.Public | BindingFlags.Instance);
        var rows = items.Select(item => properties.Select(p => Format(p.GetValue(item))).ToArray()).ToList();
        return new Table(properties.Select(p => p.Name).ToArray(), rows);
    }

    /// <summary>A DataFrame's columns and rows.</summary>
    public static Table Of(DataFrame frame) =>
        new(frame.Columns.Select(c => c.Name).ToArray(), frame.Rows.Select(row => row.Select(Format).ToArray()).ToList());

    public int Count => rows.Count;

    static string Format(object? value) => value switch
    {
        null => "",
        double d when double.IsNaN(d) || double.IsInfinity(d) => d.ToString(CultureInfo.InvariantCulture),
        double d when d != 0 && (Math.Abs(d) < 1e-3 || Math.Abs(d) >= 1e7) => d.ToString("0.00e+00", CultureInfo.InvariantCulture),
        double d => d.ToString("G4", CultureInfo.InvariantCulture),
        float f => Format((double)f),
        bool b => b ? "yes" : "NO",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    public string ToHtml()
    {
        var html = new StringBuilder("<table><thead><tr>");
        foreach (var column in columns) html.Append("<th>").Append(WebUtility.HtmlEncode(column)).Append("</th>");
        html.Append("</tr></thead><tbody>");
        foreach (var row in rows)
        {
            html.Append("<tr>");
            foreach (var cell in row) html.Append("<td>").Append(WebUtility.HtmlEncode(cell)).Append("</td>");
            html.Append("</tr>");
        }
        return html.Append("</tbody></table>").ToString();
    }

    public override string ToString()
    {
        var widths = columns.Select((c, i) => Math.Max(c.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        string Line(string[] cells) => string.Join("  ", cells.Select((c, i) => c.PadRight(widths[i]))).TrimEnd();
        return string.Join("\n", new[] { Line(columns) }.Concat(rows.Select(Line)));
    }
}
