using Lasp2.Reference;
using Lasp2.Research.Bench;
using Microsoft.Data.Analysis;

namespace Lasp2.Research.Simulation;

/// <summary>One measured MPI run next to its prediction.</summary>
public sealed record ValidationRow(string Method, int WorldSize, long Seq, double MeasuredSeconds, double PredictedSeconds, double RateGflops)
{
    /// <summary>(predicted - measured) / measured.</summary>
    public double RelativeError => (PredictedSeconds - MeasuredSeconds) / MeasuredSeconds;
}

/// <summary>
/// The cluster model applied to this machine, against its own measured MPI runs (`lasp2 bench --backend mpi`):
/// one node holding every rank, its link the measured loopback MPI alpha and beta (`lasp2 comm-bench`), and each
/// rank's compute rate the rate of the same method measured single-device (W = 1, in-process, in the same CSV) on
/// the rank's shard length N / W (the nearest measured length), times <c>oneThreadFactor</c> when that run used
/// more than 1 thread (the MPI ranks use 1) and times min(1, cores / W) (more ranks than cores share them). Predicts one layer's
/// forward + backward; nothing is fitted to the MPI runs themselves.
/// </summary>
public static class ModelValidation
{
    /// <summary>Every MPI row of <paramref name="benchCsv"/> that ran, with its prediction.</summary>
    public static IReadOnlyList<ValidationRow> Run(string benchCsv, double alphaSeconds, double bytesPerSecond, int cores, double oneThreadFactor)
    {
        var frame = BenchCsv.Load(benchCsv);
        var rows = Enumerable.Range(0, (int)frame.Rows.Count).Select(i => frame.Rows[i]).Select(Row.From)
                             .Where(r => r.Status == "ok" && MethodSchedules.Methods.Contains(r.Method)).ToList();
        var single = rows.Where(r => r.Backend == "inproc" && r.WorldSize == 1).ToList();
        var results = new List<ValidationRow>();
        foreach (var run in rows.Where(r => r.Backend == "mpi"))
        {
            var shape = run.Shape();
            var calibration = single.Where(s => s.Method == run.Method && s.SameLayer(run))
                                    .MinBy(s => Math.Abs(Math.Log((double)s.Seq / shape.Local)));
            if (calibration is null) continue;
            var calibrationShape = calibration.Shape();
            double flops = SimulationFlops(run.Method, calibrationShape);
            if (calibration.Threads != 1 && double.IsNaN(oneThreadFactor))
                throw new InvalidDataException($"{benchCsv}: the single-device {run.Method} run used {calibration.Threads} threads and the CSV has no "
                                               + "kernel runs on 1 and 2 threads to scale it to the MPI ranks' one thread.");
            double rate = flops / calibration.Seconds * (calibration.Threads == 1 ? 1.0 : oneThreadFactor) * Math.Min(1.0, (double)cores / run.WorldSize);
            var topology = Machine(alphaSeconds, bytesPerSecond, rate, run.WorldSize);
            var predicted = Simulator.Run(run.Method, shape, 1, ModelSpec.AttentionOnly, topology).Seconds;
            results.Add(new ValidationRow(run.Method, run.WorldSize, run.Seq, run.Seconds, predicted, rate / 1e9));
        }
        return results;
    }

    /// <summary>
    /// One thread's rate over two threads' from the CSV's single-device kernel runs at the same shape on 1 and 2 threads
    /// (time at 2 threads / time at 1 thread), or null when the CSV has no such pair.
    /// </summary>
    public static double? OneThreadFactor(string benchCsv)
    {
        var frame = BenchCsv.Load(benchCsv);
        var kernel = Enumerable.Range(0, (int)frame.Rows.Count).Select(i => frame.Rows[i])
            .Where(r => (string)r["method"] == "chunked" && (string)r["status"] == "ok" && (double)r["world_size"] == 1)
            .Select(r => (Key: ((double)r["seq_len"], (double)r["heads"], (double)r["head_dim"]), Threads: (double)r["threads_per_rank"],
                          Seconds: (double)r["time_median_s"])).ToList();
        var pair = kernel.Where(a => a.Threads == 1)
            .Select(a => (One: a, Two: kernel.FirstOrDefault(b => b.Threads == 2 && b.Key == a.Key)))
            .FirstOrDefault(p => p.Two.Seconds > 0);
        return pair.One.Seconds > 0 ? pair.Two.Seconds / pair.One.Seconds : null;
    }

    /// <summary>Flops of one layer forward + backward on one rank at W = 1 (the schedule's compute).</summary>
    static double SimulationFlops(string method, LayerShape shape) =>
        MethodSchedules.For(method, shape, 0) is var s
            ? s.Forward.Concat(s.Backward).OfType<ComputeEvent>().Sum(c => c.Flops) : 0;

    /// <summary>This machine as a topology: one node, the loopback link, the measured rate at efficiency 1.</summary>
    public static Topology Machine(double alphaSeconds, double bytesPerSecond, double flopsPerSecond, int worldSize)
    {
        var link = new Link("Open MPI loopback (measured)", alphaSeconds, bytesPerSecond);
        return new Topology("this-machine", "every rank on one node; measured loopback MPI and kernel rates", Math.Max(1, worldSize),
                            link, link, 1, new DeviceSpec("CPU (measured kernel rate)", flopsPerSecond, flopsPerSecond, 1.0, 24e9, 4, "fp32"), []);
    }

    /// <summary>Median |relative error| per method.</summary>
    public static IReadOnlyDictionary<string, double> MedianErrors(IReadOnlyList<ValidationRow> rows) =>
        rows.GroupBy(r => r.Method).ToDictionary(g => g.Key, g => Median(g.Select(r => Math.Abs(r.RelativeError))));

    static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? double.NaN
            : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>The columns of a bench row the validation needs.</summary>
    sealed record Row(string Method, string Backend, string Status, int WorldSize, long Seq, int Batch, int Heads, int KvHeads,
                      int Dim, int Block, bool Causal, string Dtype, int Threads, double Seconds)
    {
        public static Row From(DataFrameRow r) => new(
            (string)r["method"], (string)r["backend"], (string)r["status"], (int)(double)r["world_size"], (long)(double)r["seq_len"],
            (int)(double)r["batch"], (int)(double)r["heads"], (int)(double)r["kv_heads"], (int)(double)r["head_dim"],
            (int)(double)r["block_size"], (string)r["mask"] == "causal", (string)r["dtype"], (int)(double)r["threads_per_rank"], (double)r["time_median_s"]);

        public bool SameLayer(Row other) =>
            Batch == other.Batch && Heads == other.Heads && KvHeads == other.KvHeads && Dim == other.Dim && Block == other.Block
            && Causal == other.Causal && Dtype == other.Dtype;

        public LayerShape Shape() => new(Batch, Heads, KvHeads, Seq, Dim, Dim, WorldSize, Block, Causal, Layout.Contiguous,
                                         Dtype == "float64" ? 8 : 4);
    }
}
