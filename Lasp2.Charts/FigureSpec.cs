namespace Lasp2.Charts;

/// <summary>How the series of a figure are drawn.</summary>
public enum ChartKind { Line, Bar, Scatter }

/// <summary>
/// One named series: numeric x (<see cref="X"/>) or category labels (<see cref="Labels"/>, for bars), and y.
/// With neither x nor labels, x is 0, 1, 2, ... . A tuple (name, x[], y[]) converts to a Series.
/// </summary>
public sealed record Series(string Name, double[]? X, double[] Y, string[]? Labels = null)
{
    /// <summary>A categorical series: one bar per label.</summary>
    public static Series Categorical(string name, string[] labels, double[] y) => new(name, null, y, labels);

    public static implicit operator Series((string Name, double[] X, double[] Y) series) => new(series.Name, series.X, series.Y);

    /// <summary>Throws unless x (or labels) and y have one value per point.</summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Y, nameof(Y));
        if (X is not null && X.Length != Y.Length)
            throw new ArgumentException($"series '{Name}': x has {X.Length} values but y has {Y.Length}; they must be equal.", nameof(X));
        if (Labels is not null && Labels.Length != Y.Length)
            throw new ArgumentException($"series '{Name}': labels has {Labels.Length} values but y has {Y.Length}; they must be equal.", nameof(Labels));
    }
}

/// <summary>
/// Everything the renderer needs, as plain data (it crosses into the renderer's load context as JSON).
/// Sizes are in pixels.
/// </summary>
public sealed record FigureSpec(ChartKind Kind, string Title, string XTitle, string YTitle, IReadOnlyList<Series> Series,
                                bool LogX = false, bool LogY = false, bool Stacked = false, int Width = 720, int Height = 420);
