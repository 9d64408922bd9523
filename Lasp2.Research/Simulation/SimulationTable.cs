using Lasp2.Charts;
using Microsoft.Data.Analysis;

namespace Lasp2.Research.Simulation;

/// <summary>Simulation results as a DataFrame, a CSV and charts.</summary>
public static class SimulationTable
{
    const double Gb = 1e9;

    /// <summary>One row per result; sizes in GB (10^9 bytes) per rank.</summary>
    public static DataFrame Frame(IReadOnlyList<SimulationResult> results) => new(
        new StringDataFrameColumn("method", results.Select(r => r.Method)),
        new StringDataFrameColumn("topology", results.Select(r => r.Topology)),
        new Int32DataFrameColumn("gpus", results.Select(r => r.WorldSize)),
        new Int64DataFrameColumn("seq", results.Select(r => r.Seq)),
        new DoubleDataFrameColumn("seconds", results.Select(r => r.Seconds)),
        new DoubleDataFrameColumn("tokens_per_s", results.Select(r => r.TokensPerSecond)),
        new DoubleDataFrameColumn("compute_s", results.Select(r => r.ComputeSeconds)),
        new DoubleDataFrameColumn("exposed_s", results.Select(r => r.ExposedSeconds)),
        new DoubleDataFrameColumn("intra_gb", results.Select(r => r.IntraBytes / Gb)),
        new DoubleDataFrameColumn("inter_gb", results.Select(r => r.InterBytes / Gb)),
        new DoubleDataFrameColumn("memory_gb", results.Select(r => r.Memory.Total / Gb)),
        new DoubleDataFrameColumn("static_gb", results.Select(r => r.Memory.Static / Gb)),
        new DoubleDataFrameColumn("activations_gb", results.Select(r => (r.Memory.Activations + r.Memory.Logits) / Gb)),
        new DoubleDataFrameColumn("attention_gb", results.Select(r => (r.Memory.AttentionSaved + r.Memory.AttentionPeak) / Gb)),
        new BooleanDataFrameColumn("fits", results.Select(r => r.Fits)));

    /// <summary>Writes the CSV (directories created).</summary>
    public static void Save(DataFrame frame, string path)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null) Directory.CreateDirectory(directory);
        DataFrame.SaveCsv(frame, path);
    }

    /// <summary>Tokens/s against N, one line per (method, gpus, topology); log-log.</summary>
    public static Figure Throughput(IReadOnlyList<SimulationResult> results, string title) =>
        Chart.Line(title, "sequence length N (tokens)", "tokens / s (predicted)",
            results.GroupBy(r => (r.Method, r.WorldSize, r.Topology))
                   .Select(g => new Series($"{g.Key.Method} W={g.Key.WorldSize} {g.Key.Topology}",
                                           g.Select(r => (double)r.Seq).ToArray(), g.Select(r => r.TokensPerSecond).ToArray()))
                   .ToArray()).WithLogX().WithLogY();
}
