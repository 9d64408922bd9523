using Lasp2.Charts;
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
    public void SavedChartsOfAFolderShareOnePlotlyJsCopy()
    {
        var directory = Path.Combine(Path.GetTempPath(), $"lasp2-chart-{Guid.NewGuid():N}");
        try
        {
            Line.SaveHtml(Path.Combine(directory, "a.html"));
            Chart.Bar("b", "x", "y", ("s", new double[] { 1 }, new double[] { 2 })).SaveHtml(Path.Combine(directory, "b.html"));
            var page = File.ReadAllText(Path.Combine(directory, "a.html"));
            Assert.Equal(Line.ToHtml(Figure.PlotlyJsFileName), page);
            Assert.Contains($"<script src=\"{Figure.PlotlyJsFileName}\"", page);   // relative: the folder opens offline
            Assert.True(page.Length < 20_000, $"a saved chart should reference plotly.js, not embed it; it has {page.Length} characters");
            Assert.Equal(["a.html", "b.html", Figure.PlotlyJsFileName], Directory.GetFiles(directory).Select(Path.GetFileName).Order());
            Assert.True(new FileInfo(Path.Combine(directory, Figure.PlotlyJsFileName)).Length > 1_000_000, "plotly.min.js is not the library");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void LongTitlesWrapAndEverySeriesHasItsOwnColour()
    {
        var many = Enumerable.Range(0, 13).Select(i => new Series($"s{i}", [1, 2], [i, i + 1])).ToArray();
        var title = "Forward+backward time per iteration (B=1 H=2 d=64, float32, causal, W=4; chunked at W=1)";
        var html = Chart.Line(title, "N", "s", many).ToNotebookHtml();
        Assert.Contains("Forward+backward time per iteration (B=1 H=2 d=64, float32, causal, W=4;<br>chunked at W=1)", html);
        var colours = System.Text.RegularExpressions.Regex.Matches(html, "\"marker\":\\{\"color\":\"(#[0-9A-Fa-f]{6})\"").Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(13, colours.Count);
        Assert.Equal(13, colours.Distinct().Count());
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
