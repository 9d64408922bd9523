using Microsoft.Data.Analysis;

namespace Lasp2.Research.Bench;

/// <summary>
/// Benchmark rows as a Microsoft.Data.Analysis DataFrame with the CSV schema (<see cref="BenchCsv.Columns"/>),
/// and the typed look-ups the summary, targets and charts use on it.
/// </summary>
public static class BenchFrame
{
    /// <summary>The rows as a DataFrame with exactly the CSV's columns and types.</summary>
    public static DataFrame From(IReadOnlyList<BenchRow> rows)
    {
        var columns = BenchCsv.Columns.Select(c => c.Type == typeof(double)
            ? (DataFrameColumn)new DoubleDataFrameColumn(c.Name, rows.Select(r => Convert.ToDouble(c.Value(r), System.Globalization.CultureInfo.InvariantCulture)))
            : new StringDataFrameColumn(c.Name, rows.Select(r => c.Value(r).ToString() ?? "")));
        return new DataFrame(columns);
    }

    /// <summary>The rows of <paramref name="frame"/> whose status is "ok".</summary>
    public static IEnumerable<DataFrameRow> Ok(DataFrame frame) => frame.Rows.Where(r => Text(r, "status") == "ok");

    /// <summary>A text cell ("" when missing).</summary>
    public static string Text(DataFrameRow row, string column) => row[column]?.ToString() ?? "";

    /// <summary>A numeric cell (NaN when missing).</summary>
    public static double Number(DataFrameRow row, string column) => row[column] switch
    {
        double d => d,
        float f => f,
        null => double.NaN,
        var other => Convert.ToDouble(other, System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>
    /// The summary shown after a run: configuration, median time and spread (p25-p75), tokens/s,
    /// GFLOP/s, fraction of peak, traffic per rank against the analytic model, collectives, time
    /// blocked in communication and peak memory per rank.
    /// </summary>
    public static DataFrame Summary(DataFrame frame)
    {
        var rows = frame.Rows.ToList();
        DataFrameColumn Str(string name, string column) => new StringDataFrameColumn(name, rows.Select(r => Text(r, column)));
        DataFrameColumn Num(string name, Func<DataFrameRow, double> value) => new DoubleDataFrameColumn(name, rows.Select(value));
        return new DataFrame(
            Str("method", "method"), Str("backend", "backend"),
            Num("W", r => Number(r, "world_size")), Num("N", r => Number(r, "seq_len")),
            Str("mask", "mask"), Str("dtype", "dtype"), new StringDataFrameColumn("status", rows.Select(r => Text(r, "status") is var t && t.Length > 40 ? t[..40] + "..." : t)),
            Num("time_ms", r => 1e3 * Number(r, "time_median_s")),
            Num("iqr_ms", r => 1e3 * (Number(r, "time_p75_s") - Number(r, "time_p25_s"))),
            Num("tokens_per_s", r => Number(r, "tokens_per_s")),
            Num("gflops", r => Number(r, "gflops_per_s")),
            Num("of_peak", r => Number(r, "fraction_of_peak")),
            Num("sent_KiB", r => Number(r, "bytes_sent_per_rank") / 1024),
            Num("analytic_KiB", r => Number(r, "analytic_bytes_sent_per_rank") / 1024),
            Str("model", "analytic_match"),
            Num("collectives", r => Number(r, "collectives_per_rank")),
            Num("comm_wait_ms", r => 1e3 * Number(r, "comm_wait_mean_s")),
            Num("mem_MiB", r => Number(r, "peak_mem_per_rank_bytes") / (1 << 20)));
    }
}
