using Microsoft.Data.Analysis;
using static Lasp2.Research.Bench.BenchFrame;

namespace Lasp2.Research.Bench;

/// <summary>One benchmark target, evaluated on measured rows.</summary>
/// <param name="Name">What is compared.</param>
/// <param name="Value">The measured value (NaN when the rows are missing).</param>
/// <param name="Limit">The target bound.</param>
/// <param name="AtLeast">True for "Value &gt;= Limit", false for "Value &lt;= Limit".</param>
/// <param name="Basis">Which rows were compared.</param>
public sealed record TargetResult(string Name, double Value, double Limit, bool AtLeast, string Basis)
{
    /// <summary>"met", "missed" or "not measured".</summary>
    public string Verdict => double.IsNaN(Value) ? "not measured" : (AtLeast ? Value >= Limit : Value <= Limit) ? "met" : "missed";
}

/// <summary>
/// The benchmark targets (outputs of a run, never test assertions) and the comparison with the
/// paper's published speed-ups, both computed from a benchmark DataFrame.
/// </summary>
public static class BenchTargets
{
    /// <summary>Registry names the targets refer to.</summary>
    public const string Chunked = "chunked", Lasp2 = "lasp2", Lasp1 = "lasp1", RingLinear = "ring-linear";

    /// <summary>Evaluates the targets on the ok rows of <paramref name="frame"/>.</summary>
    public static IReadOnlyList<TargetResult> Evaluate(DataFrame frame)
    {
        var ok = Ok(frame).Where(r => Text(r, "dtype") == "float32" && Text(r, "mask") == "causal").ToList();
        return [KernelEfficiency(ok, heads: 1, dim: 128), KernelEfficiency(ok, heads: 8, dim: 64), ComputeOverhead(ok), Lasp2W1Overhead(ok), .. MpiRatios(ok)];
    }

    /// <summary><see cref="Evaluate"/> as a DataFrame: target, measured, bound, verdict, basis.</summary>
    public static DataFrame Table(DataFrame frame)
    {
        var targets = Evaluate(frame);
        return new DataFrame(
            new StringDataFrameColumn("target", targets.Select(t => t.Name)),
            new DoubleDataFrameColumn("measured", targets.Select(t => t.Value)),
            new StringDataFrameColumn("bound", targets.Select(t => (t.AtLeast ? ">= " : "<= ") + t.Limit.ToString("0.00", System.Globalization.CultureInfo.InvariantCulture))),
            new StringDataFrameColumn("verdict", targets.Select(t => t.Verdict)),
            new StringDataFrameColumn("basis", targets.Select(t => t.Basis)));
    }

    // Chunked kernel fwd+bwd >= 50% of the measured fp32 matmul peak at N = 64K: the median over the rows that ran it.
    static TargetResult KernelEfficiency(List<DataFrameRow> ok, int heads, int dim)
    {
        var rows = ok.Where(r => Text(r, "method") == Chunked && Number(r, "seq_len") == 65536
                                 && Number(r, "heads") == heads && Number(r, "head_dim") == dim).ToList();
        var fractions = rows.Select(r => Number(r, "fraction_of_peak")).ToList();
        return new TargetResult($"chunked kernel fwd+bwd / fp32 matmul peak (N=64K, h={heads}, d={dim})",
            fractions.Count == 0 ? double.NaN : BenchRow.Quantile(fractions, 0.5), 0.50, true,
            rows.Count == 0 ? "no row" : "median of " + string.Join("; ", rows.Select(r =>
                $"{Number(r, "gflops_per_s"):0.0} GFLOP/s of {Number(r, "peak_gflops"):0.0} ({Number(r, "threads_per_rank")} thread(s), load {Number(r, "load_avg_start"):0.0})")));
    }

    // LASP-2 W = 4 in-process: summed rank compute (thread CPU, 1 thread per rank) <= 1.10 x the chunked kernel on the same work.
    static TargetResult ComputeOverhead(List<DataFrameRow> ok) => CpuRatio(ok, Chunked, 1, "chunked kernel CPU");

    // The same against LASP-2 on one rank (its own code path, no communication): the second baseline.
    static TargetResult Lasp2W1Overhead(List<DataFrameRow> ok) => CpuRatio(ok, Lasp2, 1, "LASP-2 W=1 CPU");

    static TargetResult CpuRatio(List<DataFrameRow> ok, string baseline, int baselineWorld, string what)
    {
        var pairs =
            from lasp in ok.Where(r => Text(r, "method") == Lasp2 && Text(r, "backend") == "inproc" && Number(r, "world_size") == 4 && Number(r, "threads_per_rank") == 1)
            from single in ok.Where(r => Text(r, "method") == baseline && Number(r, "world_size") == baselineWorld && Number(r, "threads_per_rank") == 1)
            where SameWork(lasp, single)
            orderby Number(lasp, "seq_len") descending
            select (lasp, single);
        var (l, s) = pairs.FirstOrDefault();
        return new TargetResult($"LASP-2 W=4 in-process summed rank CPU / {what} (same work)",
            l is null ? double.NaN : Number(l, "rank_cpu_sum_s") / Number(s!, "rank_cpu_sum_s"), 1.10, false,
            l is null ? "no matching rows (both need threads_per_rank = 1)" : $"N={Number(l, "seq_len")}, h={Number(l, "heads")}, d={Number(l, "head_dim")}");
    }

    /// <summary>
    /// LASP-2 / LASP-1 median time per iteration for every backend, W and N both ran, with whether the case was
    /// oversubscribed and, where LASP-2 is not faster, the measured reason (comm wait, compute, or spread).
    /// </summary>
    public static DataFrame Lasp2VersusLasp1(DataFrame frame)
    {
        var ok = Ok(frame).Where(r => Text(r, "dtype") == "float32" && Text(r, "mask") == "causal").ToList();
        var pairs = (from lasp in ok.Where(r => Text(r, "method") == Lasp2)
                     let other = ok.LastOrDefault(r => Text(r, "method") == Lasp1 && Text(r, "backend") == Text(lasp, "backend")
                                                       && Number(r, "world_size") == Number(lasp, "world_size") && SameWork(r, lasp))
                     where other is not null
                     orderby Text(lasp, "backend"), Number(lasp, "world_size"), Number(lasp, "seq_len")
                     select (lasp, other)).ToList();
        return new DataFrame(
            new StringDataFrameColumn("backend", pairs.Select(p => Text(p.lasp, "backend"))),
            new DoubleDataFrameColumn("W", pairs.Select(p => Number(p.lasp, "world_size"))),
            new DoubleDataFrameColumn("N", pairs.Select(p => Number(p.lasp, "seq_len"))),
            new DoubleDataFrameColumn("lasp2_ms", pairs.Select(p => 1e3 * Number(p.lasp, "time_median_s"))),
            new DoubleDataFrameColumn("lasp1_ms", pairs.Select(p => 1e3 * Number(p.other, "time_median_s"))),
            new DoubleDataFrameColumn("ratio", pairs.Select(p => Number(p.lasp, "time_median_s") / Number(p.other, "time_median_s"))),
            new StringDataFrameColumn("oversubscribed", pairs.Select(p => Text(p.lasp, "oversubscribed"))),
            new StringDataFrameColumn("where LASP-2 is not faster", pairs.Select(p => Reason(p.lasp, p.other))));
    }

    static string Reason(DataFrameRow lasp, DataFrameRow other)
    {
        if (Number(lasp, "time_median_s") < Number(other, "time_median_s")) return "";
        var parts = new List<string>();
        if (Text(lasp, "oversubscribed") == "yes") parts.Add($"oversubscribed ({Number(lasp, "world_size")} ranks > {Number(lasp, "cores")} cores): no timing claim");
        if (Number(lasp, "world_size") == 1) parts.Add("W=1: no communication, same kernel work");
        if (Number(lasp, "time_p25_s") <= Number(other, "time_p75_s")) parts.Add("p25-p75 ranges overlap");
        double wait = Number(lasp, "comm_wait_max_s") - Number(other, "comm_wait_max_s");
        double cpu = Number(lasp, "rank_cpu_sum_s") - Number(other, "rank_cpu_sum_s");
        if (wait > 0) parts.Add($"waits {1e3 * wait:0.0} ms longer in communication");
        if (cpu > 0) parts.Add($"summed rank CPU {1e3 * cpu:0.0} ms higher");
        if (Math.Max(Number(lasp, "load_avg_start"), Number(lasp, "load_avg_end")) > Number(lasp, "cores")) parts.Add($"machine loaded (load {Number(lasp, "load_avg_start"):0.0})");
        return parts.Count == 0 ? "not explained by the recorded columns" : string.Join("; ", parts);
    }

    // At the longest N all linear methods ran on MPI with W = 4: LASP-2 <= 0.85 x LASP-1 and <= 0.5 x Ring (linear).
    static IEnumerable<TargetResult> MpiRatios(List<DataFrameRow> ok)
    {
        var mpi = ok.Where(r => Text(r, "backend") == "mpi" && Number(r, "world_size") == 4).ToList();
        double Time(string method, double n) =>
            mpi.Where(r => Text(r, "method") == method && Number(r, "seq_len") == n).Select(r => Number(r, "time_median_s")) is var times && times.Any()
                ? BenchRow.Quantile(times.ToList(), 0.5) : double.NaN;
        var common = mpi.Select(r => Number(r, "seq_len")).Distinct()
            .Where(n => new[] { Lasp2, Lasp1, RingLinear }.All(m => !double.IsNaN(Time(m, n))))
            .DefaultIfEmpty(double.NaN).Max();
        string basis = double.IsNaN(common) ? "no N where lasp2, lasp1 and ring-linear all ran on MPI W=4" : $"N={common}";
        yield return new("LASP-2 / LASP-1 time per iteration (MPI, W=4, longest common N)", Time(Lasp2, common) / Time(Lasp1, common), 0.85, false, basis);
        yield return new("LASP-2 / Ring (linear) time per iteration (MPI, W=4, longest common N)", Time(Lasp2, common) / Time(RingLinear, common), 0.5, false, basis);
    }

    /// <summary>
    /// The paper's speed-ups of LASP-2 (tokens/s ratio minus one; arXiv 2502.07563, 64 A100, Linear-Llama3-1B)
    /// beside the ratios measured here for each backend and W at the longest N both methods ran.
    /// </summary>
    public static DataFrame PaperComparison(DataFrame frame)
    {
        var ok = Ok(frame).Where(r => Text(r, "dtype") == "float32" && Text(r, "mask") == "causal").ToList();
        var published = new (string Versus, string Where, double Gain)[]
        {
            (Lasp1, "paper 512K, 64 GPUs", 0.073), (Lasp1, "paper 2048K, 64 GPUs", 0.152),
            (RingLinear, "paper 512K, 64 GPUs", 0.178), (RingLinear, "paper 2048K, 64 GPUs", 0.366),
        };
        var measured =
            from versus in new[] { Lasp1, RingLinear }
            from g in ok.Where(r => Text(r, "method") is Lasp2).GroupBy(r => (Backend: Text(r, "backend"), W: Number(r, "world_size")))
            let n = g.Select(r => Number(r, "seq_len")).Where(n => Find(ok, versus, g.Key.Backend, g.Key.W, n) is not null).DefaultIfEmpty(double.NaN).Max()
            where !double.IsNaN(n)
            let lasp = g.First(r => Number(r, "seq_len") == n)
            select (versus, $"measured {g.Key.Backend} W={g.Key.W} N={n}",
                    Number(lasp, "tokens_per_s") / Number(Find(ok, versus, g.Key.Backend, g.Key.W, n)!, "tokens_per_s") - 1);
        var all = published.Concat(measured).ToList();
        return new DataFrame(
            new StringDataFrameColumn("lasp2_versus", all.Select(a => a.Item1)),
            new StringDataFrameColumn("where", all.Select(a => a.Item2)),
            new DoubleDataFrameColumn("throughput_gain", all.Select(a => a.Item3)));
    }

    static DataFrameRow? Find(List<DataFrameRow> ok, string method, string backend, double world, double n) =>
        ok.FirstOrDefault(r => Text(r, "method") == method && Text(r, "backend") == backend && Number(r, "world_size") == world && Number(r, "seq_len") == n);

    static bool SameWork(DataFrameRow a, DataFrameRow b) =>
        new[] { "seq_len", "batch", "heads", "head_dim", "block_size" }.All(c => Number(a, c) == Number(b, c))
        && Text(a, "decay") == Text(b, "decay");
}
