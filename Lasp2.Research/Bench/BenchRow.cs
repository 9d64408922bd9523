
namespace Lasp2.Research.Bench;

/// <summary>What every row of one run shares: the machine, its measured ceilings and the exact command.</summary>
public sealed record BenchContext(MachineInfo Machine, IReadOnlyList<PeakMeasurement> Peaks, string Command, DateTime StartedUtc);

/// <summary>
/// One CSV row: a configuration and what it measured. Times are per iteration (forward + backward);
/// an iteration's time is the slowest rank's. Traffic and collectives are per rank per iteration
/// (the busiest rank); compute sums are over ranks (median over iterations).
/// </summary>
public sealed record BenchRow
{
    public required BenchCase Case { get; init; }
    public required BenchContext Context { get; init; }
    /// <summary>"ok", or why the configuration has no timings ("skipped: ...", "failed: ...").</summary>
    public required string Status { get; init; }
    public string MemoryMethod { get; init; } = "";
    public double TimeMedian { get; init; } = double.NaN;
    public double TimeMin { get; init; } = double.NaN;
    public double TimeMax { get; init; } = double.NaN;
    public double TimeP25 { get; init; } = double.NaN;
    public double TimeP75 { get; init; } = double.NaN;
    /// <summary>Sum over ranks of thread CPU time (meaningful with 1 thread per rank).</summary>
    public double RankCpuSum { get; init; } = double.NaN;
    /// <summary>Sum over ranks of wall time minus time blocked in communication.</summary>
    public double RankBusySum { get; init; } = double.NaN;
    public double CommWaitMean { get; init; } = double.NaN;
    public double CommWaitMax { get; init; } = double.NaN;
    public long BytesSentPerRank { get; init; }
    public long BytesReceivedPerRank { get; init; }
    public long CollectivesPerRank { get; init; }
    /// <summary>Bytes the analytic model predicts the busiest rank sends per iteration (NaN when none).</summary>
    public double AnalyticBytesSentPerRank { get; init; } = double.NaN;
    /// <summary>Bytes the analytic model predicts the busiest rank receives per iteration (NaN when none).</summary>
    public double AnalyticBytesReceivedPerRank { get; init; } = double.NaN;
    /// <summary>"yes" when every rank sent and received exactly what the model predicts for it, "no" otherwise, "n/a" without a model.</summary>
    public string AnalyticMatch { get; init; } = "n/a";
    /// <summary>
    /// System CPU seconds per iteration of the processes that ran the case (median over iterations; in-process ranks
    /// share one process, MPI ranks are summed): mostly the kernel faulting in and zero-filling fresh pages.
    /// </summary>
    public double SystemSecondsPerIteration { get; init; } = double.NaN;
    /// <summary>Minor page faults per iteration of the processes that ran the case (median over iterations, as above).</summary>
    public double MinorFaultsPerIteration { get; init; } = double.NaN;
    /// <summary>1-minute load average when the case started and when it ended (other users of the machine show here).</summary>
    public double LoadStart { get; init; } = double.NaN;
    public double LoadEnd { get; init; } = double.NaN;
    public long PeakMemoryPerRank { get; init; }
    /// <summary>The analytic memory model's peak per rank (<see cref="MemoryModel"/>; NaN for methods it does not cover).</summary>
    public double ModelPeakMemoryPerRank => MemoryModel.Covers(Case.Method) && Case.Shape.Causal
        ? MemoryModel.PeakBytesPerRank(Case.Shape, Case.ElementSize) : double.NaN;
    public long ProcessPeakBytes { get; init; }

    public double Flops => FlopCount.ForwardBackward(Case.Algorithm, Case.Shape, Case.DocumentBoundaries);
    public double TokensPerSecond => Case.Shape.Batch * Case.Shape.SeqLen / TimeMedian;
    public double GflopsPerSecond => Flops / TimeMedian / 1e9;
    /// <summary>The measured libtorch ceiling for the threads this configuration could use in total.</summary>
    public double PeakGflops => MatmulPeak.For(Context.Peaks, Case.Dtype, UsableThreads);
    public double FractionOfPeak => GflopsPerSecond / PeakGflops;
    /// <summary>
    /// More ranks than the machine's cores: ranks time-share cores, so wall times are no speed claim. The machine's
    /// online CPUs, not the process's: an MPI rank bound to one core sees only that one.
    /// </summary>
    public bool Oversubscribed => Case.Shape.WorldSize > Math.Max(Context.Machine.Cores, MachineInfo.OnlineCpus());

    int UsableThreads => Math.Min(Context.Machine.Cores, Case.ThreadsPerRank * Case.Shape.WorldSize);

    /// <summary>Summarises every rank's samples (ranks in order; each with one sample per timed iteration).</summary>
    public static BenchRow Measured(BenchCase benchCase, BenchContext context, IReadOnlyList<RankResult> ranks, string memoryMethod, IReadOnlyList<(long Sent, long Received)>? analyticBytes)
    {
        int iterations = ranks[0].Samples.Count;
        var wall = Enumerable.Range(0, iterations).Select(i => ranks.Max(r => r.Samples[i].WallSeconds)).ToArray();
        var last = ranks.Select(r => r.Samples[^1]).ToArray();
        return new BenchRow
        {
            Case = benchCase,
            Context = context,
            Status = "ok",
            MemoryMethod = memoryMethod,
            TimeMedian = Quantile(wall, 0.5),
            TimeMin = wall.Min(),
            TimeMax = wall.Max(),
            TimeP25 = Quantile(wall, 0.25),
            TimeP75 = Quantile(wall, 0.75),
            RankCpuSum = Median(i => ranks.Sum(r => r.Samples[i].CpuSeconds)),
            RankBusySum = Median(i => ranks.Sum(r => r.Samples[i].WallSeconds - r.Samples[i].CommWaitSeconds)),
            CommWaitMean = Median(i => ranks.Average(r => r.Samples[i].CommWaitSeconds)),
            CommWaitMax = Median(i => ranks.Max(r => r.Samples[i].CommWaitSeconds)),
            BytesSentPerRank = last.Max(s => s.BytesSent),
            BytesReceivedPerRank = last.Max(s => s.BytesReceived),
            CollectivesPerRank = last.Max(s => s.Collectives),
            AnalyticBytesSentPerRank = analyticBytes is null ? double.NaN : analyticBytes.Max(a => a.Sent),
            AnalyticBytesReceivedPerRank = analyticBytes is null ? double.NaN : analyticBytes.Max(a => a.Received),
            AnalyticMatch = analyticBytes is null ? "n/a"
                : last.Select(s => (s.BytesSent, s.BytesReceived)).SequenceEqual(analyticBytes) ? "yes" : "no",
            SystemSecondsPerIteration = Median(i => PerProcess(r => r.Samples[i].ProcessSystemSeconds)),
            MinorFaultsPerIteration = Median(i => PerProcess(r => r.Samples[i].ProcessMinorFaults)),
            PeakMemoryPerRank = ranks.Max(r => r.PeakMemoryBytes),
            ProcessPeakBytes = ranks.Max(r => r.ProcessPeakBytes),
        };

        // In-process ranks all see the one process (take the largest reading); MPI ranks are one process each (sum them).
        double PerProcess(Func<RankResult, double> value) => benchCase.Backend == "mpi" ? ranks.Sum(value) : ranks.Max(value);

        double Median(Func<int, double> perIteration) =>
            Quantile(Enumerable.Range(0, iterations).Select(perIteration).ToArray(), 0.5);
    }

    /// <summary>A configuration without timings (skipped or failed), kept in the CSV so gaps are explained.</summary>
    public static BenchRow Unmeasured(BenchCase benchCase, BenchContext context, string status) =>
        new() { Case = benchCase, Context = context, Status = status };

    /// <summary>Linear-interpolated quantile (p in [0, 1]) of a non-empty sample.</summary>
    public static double Quantile(IReadOnlyList<double> values, double p)
    {
        if (values.Count == 0) throw new ArgumentException("need at least one value", nameof(values));
        if (p is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(p), p, "quantile must be in [0, 1]");
        var sorted = values.Order().ToArray();
        double position = p * (sorted.Length - 1);
        int lower = (int)Math.Floor(position), upper = (int)Math.Ceiling(position);
        return sorted[lower] + (position - lower) * (sorted[upper] - sorted[lower]);
    }
}
