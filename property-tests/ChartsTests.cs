using Lasp2.Charts;
using Chart = Lasp2.Charts.Charts;   // inside a Lasp2.* namespace, "Charts" names the namespace
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>
/// Lasp2.Charts renders through Plotly.NET in its own load context. This test host loads FsCheck's
/// FSharp.Core (not Plotly.NET's 10.1) into its default context, like the notebook kernels do with theirs,
/// so these tests also show the isolation works.
/// </summary>
public class ChartsTests
{
    static readonly Figure Line = Chart.Line("bytes vs N", "N", "bytes",
        ("lasp2", new double[] { 1, 2, 4 }, new double[] { 10, 10, 10 }),
        ("ring", new double[] { 1, 2, 4 }, new double[] { 10, 20, 40 })).WithLogX().WithLogY();

    [Fact]
    public void HtmlIsSelfContainedWithTheDataAndPlotlyJsEmbedded()
    {
        var html = Line.ToHtml();
        Assert.Contains("\"name\":\"ring\"", html);
        Assert.Contains("\"y\":[10.0,20.0,40.0]", html);
        Assert.Contains("\"type\":\"log\"", html);
        Assert.Contains("Plotly.newPlot(", html);
        Assert.True(html.Length > 1_000_000, $"plotly.js is not embedded: the document has only {html.Length} characters");
        Assert.DoesNotContain("<script src=", html);   // nothing loaded from elsewhere (no CDN)
        Assert.Equal(html, Line.ToHtml());              // stable div id: the same chart gives the same file
    }

    [Fact]
    public void SaveHtmlWritesTheDocument()
    {
        var path = Path.Combine(Path.GetTempPath(), $"lasp2-chart-{Guid.NewGuid():N}", "chart.html");
        try
        {
            Line.SaveHtml(path);
            Assert.Equal(Line.ToHtml(), File.ReadAllText(path));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(path)!, recursive: true);
        }
    }

    [Fact]
    public void NotebookHtmlIsSmallDeterministicAndWaitsForTheLoader()
    {
        var cell = Line.ToNotebookHtml();
        Assert.Equal(cell, Line.ToNotebookHtml());
        Assert.True(cell.Length < 10_000, $"a notebook chart should not carry plotly.js; it has {cell.Length} characters");
        Assert.Contains("window.lasp2PlotlyReady", cell);
        var bar = Chart.Bar("work per rank", "rank", "pairs", Series.Categorical("zigzag", ["rank 0", "rank 1"], [3, 3])).Stacked();
        Assert.Contains("\"barmode\":\"stack\"", bar.ToNotebookHtml());
        Assert.Contains("DecompressionStream", NotebookPlotly.Loader());
    }

    [Fact]
    public void BadSeriesAreRefusedNamingTheParameter()
    {
        var mismatch = Assert.Throws<ArgumentException>(() =>
            Chart.Line("t", "x", "y", ("a", new double[] { 1, 2 }, new double[] { 1 })));
        Assert.Equal("X", mismatch.ParamName);
        Assert.Contains("x has 2 values but y has 1", mismatch.Message);
        var empty = Assert.Throws<ArgumentException>(() => Chart.Bar("t", "x", "y"));
        Assert.Equal("series", empty.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => Line.WithSize(50, 400));
    }
}
