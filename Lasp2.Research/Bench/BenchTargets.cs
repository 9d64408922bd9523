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

    /// <summary>Evaluates the three benchmark targets on the ok rows of <paramref name="frame"/>.</summary>
    public static IReadOnlyList<TargetResult> Evaluate(DataFrame frame)
    {
        var ok = Ok(frame).Where(r => Text(r, "dtype") == "float32" && Text(r, "mask") == "causal").ToList();
        return [KernelEfficiency(ok), ComputeOverhead(ok), .. MpiRatios(ok)];
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

    // Chunked kernel fwd+bwd >= 60% of the measured fp32 matmul peak at N = 64K, h = 1, d = 128.
    static TargetResult KernelEfficiency(List<DataFrameRow> ok)
    {
        var best = ok.Where(r => Text(r, "method") == Chunked && Number(r, "seq_len") == 65536
                                 && Number(r, "heads") == 1 && Number(r, "head_dim") == 128)
                     .MaxBy(r => Number(r, "fraction_of_peak"));
        return new TargetResult("chunked kernel fwd+bwd / fp32 matmul peak (N=64K, h=1, d=128)",
            best is null ? double.NaN : Number(best, "fraction_of_peak"), 0.60, true,
            best is null ? "no row" : $"{Number(best, "gflops_per_s"):0.0} GFLOP/s of {Number(best, "peak_gflops"):0.0} ({Number(best, "threads_per_rank")} thread(s))");
    }

    // LASP-2 W = 4 in-process: summed rank compute (thread CPU, 1 thread per rank) <= 1.10 x the chunked kernel on the same work.
    static TargetResult ComputeOverhead(List<DataFrameRow> ok)
    {
        var pairs =
            from lasp in ok.Where(r => Text(r, "method") == Lasp2 && Text(r, "backend") == "inproc" && Number(r, "world_size") == 4 && Number(r, "threads_per_rank") == 1)
            from single in ok.Where(r => Text(r, "method") == Chunked && Number(r, "threads_per_rank") == 1)
            where SameWork(lasp, single)
            orderby Number(lasp, "seq_len") descending
            select (lasp, single);
        var (l, s) = pairs.FirstOrDefault();
        return new TargetResult("LASP-2 W=4 in-process summed rank CPU / chunked kernel CPU (same work)",
            l is null ? double.NaN : Number(l, "rank_cpu_sum_s") / Number(s!, "rank_cpu_sum_s"), 1.10, false,
            l is null ? "no matching rows (both need threads_per_rank = 1)" : $"N={Number(l, "seq_len")}, h={Number(l, "heads")}, d={Number(l, "head_dim")}");
    }

    // At the longest N all linear methods ran on MPI with W = 4: LASP-2 <= 0.85 x LASP-1 and <= 0.5 x Ring (linear).
    static IEnumerable<TargetResult> MpiRatios(List<DataFrameRow> ok)
    {
        var mpi = ok.Where(r => Text(r, "backend") == "mpi" && Number(r, "world_size") == 4).ToList();
        double Time(string method, double n) =>
            mpi.Where(r => Text(r, "method") == method && Number(r, "seq_len") == n).Select(r => Number(r, "time_median_s")).DefaultIfEmpty(double.NaN).Min();
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
