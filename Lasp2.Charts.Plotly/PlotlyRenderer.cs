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
        var traces = spec.Series.Select(series => (Trace)Trace(spec.Kind, series)).ToArray();
        var chart = GenericChart.ofTraceObjects(false, traces);
        return GenericChart.setLayout(Layout(spec), chart);
    }

    static Trace2D Trace(ChartKind kind, Series series)
    {
        var trace = new Trace2D(kind == ChartKind.Bar ? "bar" : "scatter");
        trace.SetProperty("name", series.Name);
        trace.SetProperty("x", (object?)series.Labels ?? series.X ?? Enumerable.Range(0, series.Y.Length).Select(i => (double)i).ToArray());
        trace.SetProperty("y", series.Y);
        if (kind != ChartKind.Bar) trace.SetProperty("mode", kind == ChartKind.Line ? "lines+markers" : "markers");
        return trace;
    }

    static Layout Layout(FigureSpec spec)
    {
        var layout = new Layout();
        layout.SetProperty("title", Title(spec.Title));
        layout.SetProperty("xaxis", Axis(spec.XTitle, spec.LogX));
        layout.SetProperty("yaxis", Axis(spec.YTitle, spec.LogY));
        layout.SetProperty("width", spec.Width);
        layout.SetProperty("height", spec.Height);
        if (spec.Kind == ChartKind.Bar) layout.SetProperty("barmode", spec.Stacked ? "stack" : "group");
        return layout;
    }

    static Dictionary<string, object> Title(string text) => new() { ["text"] = text };

    static Dictionary<string, object> Axis(string title, bool log) =>
        new() { ["title"] = Title(title), ["type"] = log ? "log" : "-" };

    static GenericChart WithPlotlyJs(GenericChart chart, PlotlyJSReference reference) =>
        GenericChart.setDisplayOptions(
            DisplayOptions.init(FSharpOption<string>.None, FSharpOption<string>.Some("utf-8"), FSharpOption<string>.None,
                                null, null, null, FSharpOption<PlotlyJSReference>.Some(reference)),
            chart);
}
