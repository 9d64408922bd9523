using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Lasp2.Charts;

/// <summary>
/// An immutable chart. Rendering goes through Plotly.NET in its own load context (see RendererContext).
/// </summary>
public sealed class Figure(FigureSpec spec)
{
    public FigureSpec Spec { get; } = spec;

    public Figure WithLogX(bool log = true) => new(Spec with { LogX = log });
    public Figure WithLogY(bool log = true) => new(Spec with { LogY = log });
    public Figure Stacked(bool stacked = true) => new(Spec with { Stacked = stacked });

    /// <summary>Width and height in pixels (both at least 100).</summary>
    public Figure WithSize(int width, int height)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 100);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 100);
        return new(Spec with { Width = width, Height = height });
    }

    /// <summary>The figure as JSON (the renderer's input).</summary>
    public string ToJson() => JsonSerializer.Serialize(Spec);

    /// <summary>
    /// A complete HTML document. Without <paramref name="plotlyJsUrl"/> plotly.js is embedded (about 3.6 MB;
    /// opens offline, no CDN); with it, the document loads plotly.js from that URL, e.g. a relative path to a
    /// copy beside it (as <see cref="SaveHtml"/> writes).
    /// </summary>
    public string ToHtml(string? plotlyJsUrl = null)
    {
        var json = ToJson();
        var html = plotlyJsUrl is null ? RendererContext.Call("Document", json) : RendererContext.Call("DocumentReferencing", json, plotlyJsUrl);
        return WithStableId(html, json);
    }

    /// <summary>
    /// Writes the chart to <paramref name="path"/> (directories are created) as a document that loads
    /// <see cref="PlotlyJsFileName"/> from its own folder, and writes that file there unless an identical
    /// copy is present: every chart of a folder shares one plotly.js and the folder opens offline.
    /// </summary>
    public void SaveHtml(string path)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        var plotlyJsPath = Path.Combine(directory, PlotlyJsFileName);
        var plotlyJs = RendererContext.Call("PlotlyJs");   // the copy Plotly.NET ships, the version its HTML expects
        if (!File.Exists(plotlyJsPath) || File.ReadAllText(plotlyJsPath) != plotlyJs) File.WriteAllText(plotlyJsPath, plotlyJs);
        File.WriteAllText(path, ToHtml(PlotlyJsFileName));
    }

    /// <summary>The name of the plotly.js copy <see cref="SaveHtml"/> keeps beside the charts.</summary>
    public const string PlotlyJsFileName = "plotly.min.js";

    /// <summary>
    /// The chart for a notebook cell: a div and its drawing script, without plotly.js, which
    /// <see cref="NotebookPlotly.Loader"/> puts on the page once per notebook. The drawing waits for
    /// that loader. The div id is a hash of the figure, so re-running a notebook gives the same output.
    /// </summary>
    public string ToNotebookHtml()
    {
        var json = ToJson();
        var html = WithStableId(RendererContext.Call("Fragment", json), json);
        var render = "renderPlotly_" + Id(json).Replace("-", "_");
        return html.Replace(render + "();", $"(window.lasp2PlotlyReady || Promise.resolve()).then({render});");
    }

    /// <summary>Plotly.NET names the div with a fresh GUID; a hash of the figure makes the same chart give the same HTML.</summary>
    static string WithStableId(string html, string json)
    {
        var guid = html.Split("<div id=\"", 2)[1].Split('"', 2)[0];
        var id = Id(json);
        return html.Replace(guid, id).Replace(guid.Replace("-", ""), id.Replace("-", "_"));
    }

    static string Id(string json) => "lasp2-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(json)))[..16];

    public override string ToString() => $"{Spec.Kind} chart \"{Spec.Title}\" ({Spec.Series.Count} series)";
}

/// <summary>plotly.js for notebooks, put on the page once (the first cell), compressed.</summary>
public static class NotebookPlotly
{
    /// <summary>
    /// A script that defines window.Plotly from plotly.js embedded gzip+base64 (about 1.5 MB instead of
    /// 3.6 MB) and sets window.lasp2PlotlyReady, a promise every chart of <see cref="Figure.ToNotebookHtml"/>
    /// waits for. AMD loaders (Jupyter's require.js) are hidden while plotly.js runs so it sets the global.
    /// </summary>
    public static string Loader()
    {
        var plotlyJs = Encoding.UTF8.GetBytes(RendererContext.Call("PlotlyJs"));
        using var buffer = new MemoryStream();
        using (var gzip = new GZipStream(buffer, CompressionLevel.SmallestSize)) gzip.Write(plotlyJs);
        var base64 = Convert.ToBase64String(buffer.ToArray());
        return "<div>plotly.js loaded for the charts below (embedded, offline).</div><script type=\"text/javascript\">\n"
             + "window.lasp2PlotlyReady = window.Plotly ? Promise.resolve() : (async () => {\n"
             + $"  const bytes = Uint8Array.from(atob(\"{base64}\"), c => c.charCodeAt(0));\n"
             + "  const text = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'))).text();\n"
             + "  const define = window.define; window.define = undefined;\n"
             + "  try { (0, eval)(text); } finally { window.define = define; }\n"
             + "})();\n</script>";
    }
}
