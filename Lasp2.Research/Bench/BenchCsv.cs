using System.Globalization;
using System.Text;
using Microsoft.Data.Analysis;

namespace Lasp2.Research.Bench;

/// <summary>
/// The benchmark CSV: one row per configuration, the machine, its measured ceilings and the exact
/// command repeated on every row (so any subset of rows stays self-describing). Numbers are written
/// with the invariant culture ("R" round-trip for doubles); NaN marks a value that does not apply.
/// </summary>
public static class BenchCsv
{
    /// <summary>A column: its name, its type in <see cref="Load"/>, and how a row fills it.</summary>
    public sealed record Column(string Name, Type Type, Func<BenchRow, object> Value);

    static Column Text(string name, Func<BenchRow, object> value) => new(name, typeof(string), value);
    static Column Number(string name, Func<BenchRow, object> value) => new(name, typeof(double), value);

    /// <summary>The schema, in file order.</summary>
    public static IReadOnlyList<Column> Columns { get; } =
    [
        Text("started_utc", r => r.Context.StartedUtc.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture)),
        Text("method", r => r.Case.Method),
        Text("algorithm", r => r.Case.Algorithm),
        Text("backend", r => r.Case.Backend),
        Number("world_size", r => r.Case.Shape.WorldSize),
        Number("seq_len", r => r.Case.Shape.SeqLen),
        Number("local_len", r => r.Case.Shape.LocalLen),
        Number("batch", r => r.Case.Shape.Batch),
        Number("heads", r => r.Case.Shape.Heads),
        Number("kv_heads", r => r.Case.Shape.KvHeads),
        Number("head_dim", r => r.Case.Shape.HeadDim),
        Number("block_size", r => r.Case.Shape.BlockSize),
        Text("mask", r => r.Case.Mask),
        Text("dtype", r => r.Case.DtypeName),
        Text("decay", r => r.Case.Decay is null ? "none" : string.Join(" ", r.Case.Decay.Select(d => Format(d)))),
        Text("documents", r => r.Case.Documents ?? "none"),
        Number("threads_per_rank", r => r.Case.ThreadsPerRank),
        Number("warmup", r => r.Case.Warmup),
        Number("iterations", r => r.Case.Iterations),
        Text("status", r => r.Status),
        Number("time_median_s", r => r.TimeMedian),
        Number("time_min_s", r => r.TimeMin),
        Number("time_max_s", r => r.TimeMax),
        Number("time_p25_s", r => r.TimeP25),
        Number("time_p75_s", r => r.TimeP75),
        Number("tokens_per_s", r => r.TokensPerSecond),
        Number("flops", r => r.Flops),
        Number("gflops_per_s", r => r.GflopsPerSecond),
        Number("peak_gflops", r => r.PeakGflops),
        Number("fraction_of_peak", r => r.FractionOfPeak),
        Number("rank_cpu_sum_s", r => r.RankCpuSum),
        Number("rank_busy_sum_s", r => r.RankBusySum),
        Number("comm_wait_mean_s", r => r.CommWaitMean),
        Number("comm_wait_max_s", r => r.CommWaitMax),
        Number("bytes_sent_per_rank", r => r.BytesSentPerRank),
        Number("bytes_received_per_rank", r => r.BytesReceivedPerRank),
        Number("collectives_per_rank", r => r.CollectivesPerRank),
        Number("analytic_bytes_sent_per_rank", r => r.AnalyticBytesSentPerRank),
        Number("analytic_bytes_received_per_rank", r => r.AnalyticBytesReceivedPerRank),
        Text("analytic_match", r => r.AnalyticMatch),
        Number("system_s_per_iteration", r => r.SystemSecondsPerIteration),
        Number("minor_faults_per_iteration", r => r.MinorFaultsPerIteration),
        Text("oversubscribed", r => r.Oversubscribed ? "yes" : "no"),
        Number("load_avg_start", r => r.LoadStart),
        Number("load_avg_end", r => r.LoadEnd),
        Text("native_heap", _ => NativeHeap.State),
        Number("peak_mem_per_rank_bytes", r => r.PeakMemoryPerRank),
        Number("process_peak_rss_bytes", r => r.ProcessPeakBytes),
        Number("model_peak_mem_per_rank_bytes", r => r.ModelPeakMemoryPerRank),
        Text("memory_method", r => r.MemoryMethod),
        Text("flop_convention", _ => FlopCount.Convention),
        Number("peak_fp32_1t_gflops", r => Peak(r, TorchSharp.torch.ScalarType.Float32, 1)),
        Number("peak_fp32_2t_gflops", r => Peak(r, TorchSharp.torch.ScalarType.Float32, 2)),
        Number("peak_fp64_1t_gflops", r => Peak(r, TorchSharp.torch.ScalarType.Float64, 1)),
        Number("peak_fp64_2t_gflops", r => Peak(r, TorchSharp.torch.ScalarType.Float64, 2)),
        Text("cpu", r => r.Context.Machine.Cpu),
        Number("cores", r => r.Context.Machine.Cores),
        Number("memory_bytes", r => r.Context.Machine.MemoryBytes),
        Text("os", r => r.Context.Machine.Os),
        Text("dotnet", r => r.Context.Machine.DotNet),
        Text("torchsharp", r => r.Context.Machine.TorchSharp),
        Text("libtorch", r => r.Context.Machine.LibTorch),
        Text("command", r => r.Context.Command),
    ];

    /// <summary>The header line.</summary>
    public static string Header => string.Join(',', Columns.Select(c => c.Name));

    /// <summary>One row as a CSV line (RFC 4180 quoting).</summary>
    public static string Line(BenchRow row) => string.Join(',', Columns.Select(c => Quote(Format(c.Value(row)))));

    /// <summary>
    /// Writes <paramref name="rows"/> to <paramref name="path"/>; with <paramref name="append"/> and an
    /// existing file with the same header, adds them to it (several invocations make one run).
    /// </summary>
    public static void Write(string path, IEnumerable<BenchRow> rows, bool append = false)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null) Directory.CreateDirectory(directory);
        bool keep = append && File.Exists(path);
        if (keep && File.ReadLines(path).FirstOrDefault() != Header)
            throw new InvalidDataException($"{path} has a different header than this version's schema; write to a new file.");
        var text = new StringBuilder();
        if (!keep) text.AppendLine(Header);
        foreach (var row in rows) text.AppendLine(Line(row));
        if (keep) File.AppendAllText(path, text.ToString());
        else File.WriteAllText(path, text.ToString());
    }

    /// <summary>Reads a benchmark CSV into a DataFrame with the schema's column types (text as string, numbers as double).</summary>
    public static DataFrame Load(string path)
    {
        var header = File.ReadLines(path).First().Split(',');
        var types = header.Select(name => Columns.FirstOrDefault(c => c.Name == name)?.Type ?? typeof(string)).ToArray();
        return DataFrame.LoadCsv(path, dataTypes: types, guessRows: 0);
    }

    static double Peak(BenchRow row, TorchSharp.torch.ScalarType dtype, int threads) =>
        row.Context.Peaks.FirstOrDefault(p => p.Dtype == dtype && p.Threads == threads)?.GflopsPerSecond ?? double.NaN;

    static string Format(object value) => value switch
    {
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    static string Quote(string field) =>
        field.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + field.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : field;
}
