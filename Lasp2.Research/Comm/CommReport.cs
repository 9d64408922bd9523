using System.Globalization;
using System.Text;
using Microsoft.Data.Analysis;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>
/// Communication reports as Microsoft.Data.Analysis DataFrames: one row per (rank, kind), or one row per
/// kind aggregated over ranks; and as plain fixed-width text for consoles and logs.
/// Columns: rank, kind, calls, bytes_sent, bytes_received, wait_ms (per rank);
/// kind, ranks, calls, bytes_sent, bytes_received, wait_ms_mean, wait_ms_max (aggregate; calls and bytes
/// are sums over ranks, wait is the mean and the maximum over the ranks that called the kind).
/// </summary>
public static class CommReport
{
    /// <summary>One row per rank and kind; <paramref name="statsByRank"/>[r] is rank r's stats.</summary>
    public static DataFrame PerRank(IReadOnlyList<CommStats> statsByRank)
    {
        ArgumentNullException.ThrowIfNull(statsByRank);
        var rows = statsByRank.SelectMany((stats, rank) => stats.Snapshot().Select(r => (Rank: rank, Record: r))).ToList();
        return new DataFrame(
            new Int32DataFrameColumn("rank", rows.Select(r => r.Rank)),
            new StringDataFrameColumn("kind", rows.Select(r => r.Record.Kind)),
            new Int64DataFrameColumn("calls", rows.Select(r => r.Record.Calls)),
            new Int64DataFrameColumn("bytes_sent", rows.Select(r => r.Record.BytesSent)),
            new Int64DataFrameColumn("bytes_received", rows.Select(r => r.Record.BytesReceived)),
            new DoubleDataFrameColumn("wait_ms", rows.Select(r => r.Record.Wait.TotalMilliseconds)));
    }

    /// <summary>One row per kind of a <see cref="PerRank"/> frame, summed over ranks.</summary>
    public static DataFrame Aggregate(DataFrame perRank)
    {
        ArgumentNullException.ThrowIfNull(perRank);
        var groups = perRank.Rows
            .Select(row => (Kind: Convert.ToString(row["kind"], CultureInfo.InvariantCulture) ?? "",
                            Calls: Convert.ToInt64(row["calls"], CultureInfo.InvariantCulture),
                            Sent: Convert.ToInt64(row["bytes_sent"], CultureInfo.InvariantCulture),
                            Received: Convert.ToInt64(row["bytes_received"], CultureInfo.InvariantCulture),
                            Wait: Convert.ToDouble(row["wait_ms"], CultureInfo.InvariantCulture)))
            .GroupBy(row => row.Kind, StringComparer.Ordinal)
            .OrderBy(group => group.Key, StringComparer.Ordinal)
            .ToList();
        return new DataFrame(
            new StringDataFrameColumn("kind", groups.Select(g => g.Key)),
            new Int32DataFrameColumn("ranks", groups.Select(g => g.Count())),
            new Int64DataFrameColumn("calls", groups.Select(g => g.Sum(r => r.Calls))),
            new Int64DataFrameColumn("bytes_sent", groups.Select(g => g.Sum(r => r.Sent))),
            new Int64DataFrameColumn("bytes_received", groups.Select(g => g.Sum(r => r.Received))),
            new DoubleDataFrameColumn("wait_ms_mean", groups.Select(g => g.Average(r => r.Wait))),
            new DoubleDataFrameColumn("wait_ms_max", groups.Select(g => g.Max(r => r.Wait))));
    }

    /// <summary>
    /// Every rank's stats, on every rank, exchanged through <paramref name="group"/> itself (one AllGather of a
    /// small float64 table). The snapshot is taken before the exchange, so the report does not count itself.
    /// </summary>
    public static CommStats[] Gather(IProcessGroup group)
    {
        ArgumentNullException.ThrowIfNull(group);
        var mine = group.Stats.Snapshot().ToDictionary(r => r.Kind);
        var table = new double[CommKind.All.Count * 4];
        for (int i = 0; i < CommKind.All.Count; i++)
            if (mine.TryGetValue(CommKind.All[i], out var r))
                (table[4 * i], table[4 * i + 1], table[4 * i + 2], table[4 * i + 3]) =
                    (r.Calls, r.BytesSent, r.BytesReceived, r.Wait.TotalSeconds);
        using var scope = NewDisposeScope();
        var all = group.AllGather(tensor(table, dtype: ScalarType.Float64)).data<double>().ToArray();
        return Enumerable.Range(0, group.WorldSize).Select(rank =>
        {
            var stats = new CommStats();
            for (int i = 0; i < CommKind.All.Count; i++)
            {
                int at = (rank * CommKind.All.Count + i) * 4;
                if (all[at] > 0)
                    stats.Add(new CommRecord(CommKind.All[i], (long)all[at], (long)all[at + 1], (long)all[at + 2],
                        TimeSpan.FromSeconds(all[at + 3])));
            }
            return stats;
        }).ToArray();
    }

    /// <summary>Any DataFrame as an aligned plain-text table (numbers right-aligned, invariant culture).</summary>
    public static string ToText(DataFrame frame)
    {
        ArgumentNullException.ThrowIfNull(frame);
        var names = frame.Columns.Select(c => c.Name).ToArray();
        var cells = frame.Rows.Select(row => row.Select(Format).ToArray()).ToList();
        var widths = names.Select((name, i) => cells.Select(c => c[i].Length).Append(name.Length).Max()).ToArray();
        var numeric = frame.Columns.Select(c => c.DataType != typeof(string)).ToArray();
        var text = new StringBuilder();
        void Line(IReadOnlyList<string> values) =>
            text.AppendLine(string.Join("  ", values.Select((v, i) => numeric[i] ? v.PadLeft(widths[i]) : v.PadRight(widths[i]))).TrimEnd());
        Line(names);
        Line(widths.Select(w => new string('-', w)).ToArray());
        cells.ForEach(Line);
        return text.ToString();
    }

    static string Format(object? value) => value switch
    {
        null => "",
        double d => d.ToString("0.###", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
