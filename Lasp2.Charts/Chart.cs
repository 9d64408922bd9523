namespace Lasp2.Charts;

/// <summary>
/// Chart factories. Each series is (name, x[], y[]) or a <see cref="Series"/>; the result is a
/// <see cref="Figure"/> that renders to self-contained HTML (<see cref="Figure.SaveHtml"/>) or to a
/// notebook cell (<see cref="Figure.ToNotebookHtml"/>).
/// </summary>
public static class Chart
{
    /// <summary>Lines with markers through each series' points.</summary>
    public static Figure Line(string title, string xTitle, string yTitle, params Series[] series) =>
        Create(ChartKind.Line, title, xTitle, yTitle, series);

    /// <summary>Grouped bars (one group per x value or label); <see cref="Figure.Stacked"/> stacks them.</summary>
    public static Figure Bar(string title, string xTitle, string yTitle, params Series[] series) =>
        Create(ChartKind.Bar, title, xTitle, yTitle, series);

    /// <summary>Markers only.</summary>
    public static Figure Scatter(string title, string xTitle, string yTitle, params Series[] series) =>
        Create(ChartKind.Scatter, title, xTitle, yTitle, series);

    static Figure Create(ChartKind kind, string title, string xTitle, string yTitle, Series[] series)
    {
        ArgumentNullException.ThrowIfNull(series);
        if (series.Length == 0)
            throw new ArgumentException("a chart needs at least one series.", nameof(series));
        foreach (var one in series) one.Validate();
        return new Figure(new FigureSpec(kind, title, xTitle, yTitle, series));
    }
}
