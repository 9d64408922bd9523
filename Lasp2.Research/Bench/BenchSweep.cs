using Lasp2.Research.Attention;
using static TorchSharp.torch;

namespace Lasp2.Research.Bench;

/// <summary>A method as the benchmark sees it.</summary>
/// <param name="Method">The implementation.</param>
/// <param name="Algorithm">What it computes, for the flop count.</param>
/// <param name="AnalyticBytes">Bytes the analytic model says each rank sends and receives per iteration (fwd+bwd), in rank order, for a shape and element size; null when there is no model.</param>
/// <param name="SingleDevice">True for the single-device kernel (runs at W = 1 only).</param>
public sealed record BenchMethod(
    ISequenceParallelAttention Method, FlopAlgorithm Algorithm,
    Func<BenchShape, int, IReadOnlyList<(long Sent, long Received)>>? AnalyticBytes = null, bool SingleDevice = false)
{
    /// <summary>
    /// True when the method can run <paramref name="shape"/> (mask, world size, head split such as Ulysses' W | H), with
    /// packed documents when <paramref name="documents"/>.
    /// </summary>
    public bool CanRun(BenchShape shape, bool documents = false) =>
        (SingleDevice ? shape.WorldSize == 1 : true)
        && (shape.Causal ? Method.Supports.Causal : Method.Supports.Unmasked)
        && (!documents || Method.Supports.SupportsDocuments(shape.Causal))
        && Method.Unsupported(shape.WorldSize, shape.Heads, shape.KvHeads) is null;
}

/// <summary>What to sweep. Sequence lengths are tried in increasing order per method until one would not fit.</summary>
public sealed record SweepPlan(
    IReadOnlyList<string> Methods, IReadOnlyList<long> SeqLens, IReadOnlyList<int> WorldSizes,
    IReadOnlyList<bool> Causal, IReadOnlyList<ScalarType> Dtypes,
    int Batch = 1, int Heads = 2, int KvHeads = 2, int HeadDim = 64, int BlockSize = 64,
    int? ThreadsPerRank = null, int Warmup = 1, int Iterations = 5,
    double MaxIterationSeconds = 10, double MemoryBudgetBytes = 12e9, double[]? Decay = null, string? Documents = null)
{
    /// <summary>libtorch threads per rank: as given, else the cores shared evenly (at least 1).</summary>
    public int ThreadsFor(int worldSize) => ThreadsPerRank ?? Math.Max(1, Environment.ProcessorCount / worldSize);
}

/// <summary>
/// Runs a <see cref="SweepPlan"/>: for each dtype, mask, world size and method, sequence lengths in
/// increasing order. Before each length the time and memory of the next step are extrapolated from
/// the last measured ones (time by the flop ratio, memory by the growth seen so far); a step predicted
/// over the time limit or the memory budget ends that method's sweep with a "skipped" row, so the
/// sweep never starts a run the machine cannot finish. A failing run ends it with a "failed" row.
/// Every process of an MPI run takes the same decisions (they all see the gathered results).
/// </summary>
public sealed class BenchSweep(IBenchBackend backend, IReadOnlyDictionary<string, BenchMethod> methods, BenchContext context)
{
    /// <summary>Called before each configuration runs, with the number done so far and the planned total.</summary>
    public Action<BenchCase, int, int>? Progress { get; init; }

    /// <summary>Called with each row as soon as it is measured (so a run that dies keeps what it measured).</summary>
    public Action<BenchRow>? Measured { get; init; }

    /// <summary>Runs the plan; returns one row per configuration tried.</summary>
    public IReadOnlyList<BenchRow> Run(SweepPlan plan)
    {
        foreach (var name in plan.Methods)
            if (!methods.ContainsKey(name))
                throw new ArgumentException($"unknown method '{name}'; known: {string.Join(", ", methods.Keys)}.", nameof(plan));
        var groups = Groups(plan).ToList();
        int total = groups.Sum(g => g.Count), done = 0;
        var rows = new List<BenchRow>();
        foreach (var cases in groups)
        {
            var measured = new List<BenchRow>();
            foreach (var benchCase in cases)
            {
                Progress?.Invoke(benchCase, done, total);
                var row = Predict(benchCase, measured, plan) is { } reason
                    ? BenchRow.Unmeasured(benchCase, context, "skipped: " + reason)
                    : RunOne(benchCase);
                rows.Add(row);
                Measured?.Invoke(row);
                if (row.Status != "ok") break;
                measured.Add(row);
                done++;
            }
            done += cases.Count - measured.Count;                                        // the rest of a stopped sweep
        }
        return rows;
    }

    /// <summary>Runs one configuration on the backend.</summary>
    public BenchRow RunOne(BenchCase benchCase)
    {
        var method = methods[benchCase.Method];
        double load = ProcStatus.LoadAverage();
        try
        {
            var ranks = backend.Run(benchCase.Shape.WorldSize, benchCase.ThreadsPerRank,
                group => BenchRunner.RunRank(group, method.Method, benchCase));
            var analytic = method.AnalyticBytes?.Invoke(benchCase.Shape, benchCase.ElementSize);
            return BenchRow.Measured(benchCase, context, ranks, backend.MemoryMethod, analytic) with { LoadStart = load, LoadEnd = ProcStatus.LoadAverage() };
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return BenchRow.Unmeasured(benchCase, context, "failed: " + e.GetType().Name + ": " + e.Message) with { LoadStart = load, LoadEnd = ProcStatus.LoadAverage() };
        }
    }

    // One list of cases per (dtype, mask, W, method), lengths increasing.
    IEnumerable<List<BenchCase>> Groups(SweepPlan plan)
    {
        foreach (var dtype in plan.Dtypes)
            foreach (bool causal in plan.Causal)
                foreach (int worldSize in plan.WorldSizes.Where(backend.CanRun))
                    foreach (var name in plan.Methods)
                    {
                        var method = methods[name];
                        bool linear = method.Method.Supports.Kind == AttentionKind.Linear;
                        // Grouped KV heads only where the method supports them; linear attention has H = Hkv.
                        int kvHeads = method.Method.Supports.GroupedKv ? plan.KvHeads : plan.Heads;
                        var cases = plan.SeqLens.Distinct().Order()
                            .Where(n => n % worldSize == 0)
                            .Select(n => new BenchShape(plan.Batch, plan.Heads, kvHeads, n, plan.HeadDim, plan.BlockSize, causal, worldSize))
                            .Where(shape => method.CanRun(shape, plan.Documents is not null))
                            .Select(s => new BenchCase(name, method.Algorithm, backend.Name, s, dtype, plan.ThreadsFor(worldSize),
                                plan.Warmup, plan.Iterations, linear ? plan.Decay : null, plan.Documents))
                            .ToList();
                        if (cases.Count > 0) yield return cases;
                    }
    }

    // Why the next case would not fit, extrapolated from the last ones measured; null if it fits.
    static string? Predict(BenchCase next, List<BenchRow> measured, SweepPlan plan)
    {
        if (measured.Count == 0)
        {
            // Nothing measured yet: the analytic model, where it covers the method, for all ranks together.
            if (!MemoryModel.Covers(next.Method) || !next.Shape.Causal) return null;
            double model = MemoryModel.PeakBytesPerRank(next.Shape, next.ElementSize) * next.Shape.WorldSize * MemoryModel.HeapFactor;
            return model > plan.MemoryBudgetBytes
                ? $"predicted {model / 1e9:0.0} GB by the memory model (x{MemoryModel.HeapFactor:0.#} for the native heap) > budget {plan.MemoryBudgetBytes / 1e9:0.#} GB"
                : null;
        }
        var last = measured[^1];
        double time = last.TimeMedian * FlopCount.ForwardBackward(next.Algorithm, next.Shape) / last.Flops;
        if (time > plan.MaxIterationSeconds)
            return $"predicted {time:0.0} s per iteration > limit {plan.MaxIterationSeconds:0.#} s";
        // Memory: the whole job's peak (every process's peak resident set), its per-rank part grown like the per-rank peaks
        // grew so far; the rest (runtime, libtorch, inputs of other sizes) stays. Growing the whole resident set instead
        // predicted 15.7 GB for 4 MPI processes at the next length whose peaks were 1.2 GB each, 0.08 GB of it the rank's.
        double growth = next.Shape.SeqLen / (double)last.Case.Shape.SeqLen;
        double exponent = 1;
        if (measured.Count >= 2 && measured[^2].PeakMemoryPerRank > 0 && last.PeakMemoryPerRank > measured[^2].PeakMemoryPerRank)
            exponent = Math.Clamp(Math.Log((double)last.PeakMemoryPerRank / measured[^2].PeakMemoryPerRank)
                                  / Math.Log(last.Case.Shape.SeqLen / (double)measured[^2].Case.Shape.SeqLen), 1, 2);
        double processes = next.Backend == "mpi" ? next.Shape.WorldSize : 1, ranksPerProcess = next.Shape.WorldSize / processes;
        double memory = processes * (last.ProcessPeakBytes + ranksPerProcess * last.PeakMemoryPerRank * (Math.Pow(growth, exponent) - 1));
        return memory > plan.MemoryBudgetBytes
            ? $"predicted {memory / 1e9:0.0} GB > budget {plan.MemoryBudgetBytes / 1e9:0.#} GB"
            : null;
    }
}
