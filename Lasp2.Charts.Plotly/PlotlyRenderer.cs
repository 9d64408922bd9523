using System.Text.Json;
using Microsoft.FSharp.Core;
using Plotly.NET;

namespace Lasp2.Charts.Plotly;

/// <summary>
/// Entry points called by Lasp2.Charts through reflection, with strings only: no F# type crosses the
/// load-context boundary.
/// </summary>
public static class PlotlyRenderer
{
    /// <summary>A complete HTML document with plotly.js embedded (no CDN): opens offline.</summary>
    public static string Document(string figureJson) =>
        GenericChart.toEmbeddedHTML(WithPlotlyJs(Build(figureJson), PlotlyJSReference.Full));

    /// <summary>A complete HTML document that loads plotly.js from <paramref name="plotlyJsUrl"/> (e.g. a copy beside it).</summary>
    public static string DocumentReferencing(string figureJson, string plotlyJsUrl) =>
        GenericChart.toEmbeddedHTML(WithPlotlyJs(Build(figureJson), PlotlyJSReference.NewCDN(plotlyJsUrl)));

    /// <summary>A div and the script that draws into it; plotly.js must already be on the page.</summary>
    public static string Fragment(string figureJson) =>
        GenericChart.toChartHTML(WithPlotlyJs(Build(figureJson), PlotlyJSReference.NoReference));

    /// <summary>The plotly.min.js that Plotly.NET ships (the version its HTML expects).</summary>
    public static string PlotlyJs()
    {
        var assembly = typeof(GenericChart).Assembly;
        var name = assembly.GetManifestResourceNames().Single(n => n.EndsWith(".min.js", StringComparison.Ordinal));
        using var reader = new StreamReader(assembly.GetManifestResourceStream(name)!);
        return reader.ReadToEnd();
    }

    static GenericChart Build(string figureJson)
    {
        var spec = JsonSerializer.Deserialize<FigureSpec>(figureJson)
                   ?? throw new ArgumentException("figure JSON is empty.", nameof(figureJson));
        var colours = spec.Series.Count <= DefaultColours.Length ? DefaultColours : ManyColours;
        var traces = spec.Series.Select((series, i) => (Trace)Trace(spec.Kind, series, colours[i % colours.Length])).ToArray();
        var chart = GenericChart.ofTraceObjects(false, traces);
        return GenericChart.setLayout(Layout(spec), chart);
    }

    // plotly.js's default colour cycle has 10 colours, so an 11th series repeats the first one's colour.
    // Up to 10 series keep those defaults; more get Plotly's 24-colour qualitative palette ("Dark24").
    static readonly string[] DefaultColours =
        ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52"];
    static readonly string[] ManyColours =
        ["#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86", "#EB663B", "#511CFB", "#00A08B", "#FB00D1",
         "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16", "#A777F1", "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038"];

    static Trace2D Trace(ChartKind kind, Series series, string colour)
    {
        var trace = new Trace2D(kind == ChartKind.Bar ? "bar" : "scatter");
        trace.SetProperty("marker", new Dictionary<string, object> { ["color"] = colour });
        if (kind == ChartKind.Line) trace.SetProperty("line", new Dictionary<string, object> { ["color"] = colour });
        trace.SetProperty("name", series.Name);
        trace.SetProperty("x", (object?)series.Labels ?? series.X ?? Enumerable.Range(0, series.Y.Length).Select(i => (double)i).ToArray());
        trace.SetProperty("y", series.Y);
        if (kind != ChartKind.Bar) trace.SetProperty("mode", kind == ChartKind.Line ? "lines+markers" : "markers");
        return trace;
    }

    static Layout Layout(FigureSpec spec)
    {
        var layout = new Layout();
        // plotly.js never wraps a title: a long one is cut at the figure's edges. Break it into lines that fit.
        var titleLines = WrapTitle(spec.Title, spec.Width);
        layout.SetProperty("title", Title(string.Join("<br>", titleLines)));
        layout.SetProperty("margin", new Dictionary<string, object> { ["t"] = Math.Max(80, 40 + TitleLineHeight * titleLines.Count) });
        layout.SetProperty("xaxis", Axis(spec.XTitle, spec.LogX));
        layout.SetProperty("yaxis", Axis(spec.YTitle, spec.LogY));
        layout.SetProperty("width", spec.Width);
        layout.SetProperty("height", spec.Height);
        if (spec.Kind == ChartKind.Bar) layout.SetProperty("barmode", spec.Stacked ? "stack" : "group");
        return layout;
    }

    static Dictionary<string, object> Title(string text) => new() { ["text"] = text };

    const int TitleLineHeight = 22;   // px per line at plotly.js's 17 px title font

    /// <summary>Words of <paramref name="title"/> in lines of at most width/10 characters (about 9 px per character at 17 px, plus side room).</summary>
    static List<string> WrapTitle(string title, int width)
    {
        int perLine = Math.Max(20, width / 10);
        var lines = new List<string>();
        foreach (var word in title.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            if (lines.Count > 0 && lines[^1].Length + 1 + word.Length <= perLine) lines[^1] += " " + word;
            else lines.Add(word);
        return lines;
    }

    static Dictionary<string, object> Axis(string title, bool log) =>
        new() { ["title"] = Title(title), ["type"] = log ? "log" : "-" };

    static GenericChart WithPlotlyJs(GenericChart chart, PlotlyJSReference reference) =>
        GenericChart.setDisplayOptions(
            DisplayOptions.init(FSharpOption<string>.None, FSharpOption<string>.Some("utf-8"), FSharpOption<string>.None,
                                null, null, null, FSharpOption<PlotlyJSReference>.Some(reference)),
            chart);
}
