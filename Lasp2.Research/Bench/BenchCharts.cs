using Lasp2.Charts;
using Microsoft.Data.Analysis;
using static Lasp2.Research.Bench.BenchFrame;

namespace Lasp2.Research.Bench;

/// <summary>
/// The four benchmark charts, built from a benchmark DataFrame (ok rows of one dtype and mask):
/// time vs N per method, tokens/s vs W per method, bytes sent per rank vs N (measured and analytic),
/// and fraction of the measured matmul peak vs N. Each renders to a self-contained HTML file.
/// </summary>
public static class BenchCharts
{
    /// <summary>The charts by file stem ("time-vs-n", "tokens-vs-w", "bytes-vs-n", "fraction-of-peak").</summary>
    /// <param name="frame">Rows as written by <see cref="BenchCsv"/>.</param>
    /// <param name="worldSize">W of the per-N charts (the single-device kernel is always drawn at W = 1).</param>
    /// <param name="dtype">"float32" or "float64".</param>
    /// <param name="mask">"causal" or "none".</param>
    public static IReadOnlyDictionary<string, Figure> Build(DataFrame frame, int worldSize = 4, string dtype = "float32", string mask = "causal")
    {
        var all = Ok(frame).Where(r => Text(r, "dtype") == dtype && Text(r, "mask") == mask).ToList();
        // One layer shape per chart: the one most rows ran (target and scale runs use other shapes).
        var shape = all.GroupBy(ShapeOf).OrderByDescending(g => g.Count()).Select(g => g.Key).FirstOrDefault();
        var ok = all.Where(r => ShapeOf(r) == shape).ToList();
        var atW = ok.Where(r => Number(r, "world_size") == worldSize || Text(r, "method") == BenchTargets.Chunked).ToList();
        string suffix = $"({shape}, {dtype}, {mask}, W={worldSize}; chunked at W=1)";
        var charts = new Dictionary<string, Figure>
        {
            ["time-vs-n"] = Chart.Line($"Forward+backward time per iteration {suffix}", "sequence length N", "seconds",
                PerSeries(atW, "seq_len", "time_median_s")).WithLogX().WithLogY(),
            ["bytes-vs-n"] = Chart.Line($"Bytes sent per rank per iteration, measured and analytic {suffix}", "sequence length N", "bytes",
                [.. PerSeries(atW.Where(r => Number(r, "world_size") > 1), "seq_len", "bytes_sent_per_rank"),
                 .. PerSeries(atW.Where(r => Number(r, "world_size") > 1), "seq_len", "analytic_bytes_sent_per_rank", " (analytic)")]).WithLogX().WithLogY(),
            ["fraction-of-peak"] = Chart.Line($"Fraction of the measured libtorch matmul peak {suffix}", "sequence length N", "achieved / peak GFLOP/s",
                PerSeries(atW, "seq_len", "fraction_of_peak")).WithLogX(),
        };
        // tokens/s vs W at the longest N that LASP-2 ran at every W on a backend.
        var scaling = ok.Where(r => Text(r, "method") != BenchTargets.Chunked).ToList();
        double n = ScalingLength(scaling);
        charts["tokens-vs-w"] = Chart.Line($"Throughput vs world size at N={n} ({shape}, {dtype}, {mask})", "world size W", "tokens/s",
            PerSeries(scaling.Where(r => Number(r, "seq_len") == n), "world_size", "tokens_per_s"));
        return charts;
    }

    /// <summary>Writes every chart of <see cref="Build"/> to <paramref name="directory"/> as bench-&lt;stem&gt;.html; returns the paths.</summary>
    public static IReadOnlyList<string> Save(DataFrame frame, string directory, int worldSize = 4, string dtype = "float32", string mask = "causal") =>
        Build(frame, worldSize, dtype, mask).Select(kv =>
        {
            var path = Path.Combine(directory, $"bench-{kv.Key}.html");
            kv.Value.SaveHtml(path);
            return path;
        }).ToList();

    // One series per (method, backend), points sorted by x, NaN y left out; at least one (possibly empty) series.
    static Series[] PerSeries(IEnumerable<DataFrameRow> rows, string x, string y, string label = "")
    {
        var series = rows.Where(r => !double.IsNaN(Number(r, y)))
            .GroupBy(r => $"{Text(r, "method")} {Text(r, "backend")}{label}")
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g =>
            {
                var points = g.GroupBy(r => Number(r, x)).Select(p => (X: p.Key, Y: p.Min(r => Number(r, y)))).OrderBy(p => p.X).ToArray();
                return new Series(g.Key, points.Select(p => p.X).ToArray(), points.Select(p => p.Y).ToArray());
            }).ToArray();
        return series.Length > 0 ? series : [new Series("no data", [], [])];
    }

    static string ShapeOf(DataFrameRow r) => $"B={Number(r, "batch")} H={Number(r, "heads")} d={Number(r, "head_dim")}";

    static double ScalingLength(List<DataFrameRow> rows)
    {
        var lasp = rows.Where(r => Text(r, "method") == BenchTargets.Lasp2).ToList();
        var worlds = lasp.Select(r => Number(r, "world_size")).Distinct().ToList();
        return lasp.GroupBy(r => Number(r, "seq_len"))
                   .Where(g => worlds.All(w => g.Any(r => Number(r, "world_size") == w)))
                   .Select(g => g.Key).DefaultIfEmpty(double.NaN).Max();
    }
}
