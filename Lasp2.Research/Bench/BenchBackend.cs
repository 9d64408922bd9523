using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Bench;

/// <summary>
/// Runs one rank function on W ranks and returns every rank's result, in rank order, to the caller
/// (on every process for MPI, so all processes take the same sweep decisions).
/// </summary>
public interface IBenchBackend : IDisposable
{
    /// <summary>"inproc" or "mpi".</summary>
    string Name { get; }

    /// <summary>True on the process that prints and writes results (always in-process; rank 0 under MPI).</summary>
    bool IsReporter { get; }

    /// <summary>How peak memory per rank is measured, as written into the CSV.</summary>
    string MemoryMethod { get; }

    /// <summary>The fixed world size of the backend (the MPI world), or null when any W can run.</summary>
    int? WorldSize { get; }

    /// <summary>World sizes this backend can run.</summary>
    bool CanRun(int worldSize);

    /// <summary>
    /// <see cref="MatmulPeak.Measure"/> with the machine otherwise idle (under MPI on rank 0 while the other
    /// ranks wait, then shared with them); the same result on every process.
    /// </summary>
    IReadOnlyList<PeakMeasurement> MeasurePeaks(IReadOnlyList<int> threads, int size, int repetitions);

    /// <summary>Runs <paramref name="rank"/> on <paramref name="worldSize"/> ranks with <paramref name="threadsPerRank"/> libtorch threads.</summary>
    IReadOnlyList<RankResult> Run(int worldSize, int threadsPerRank, Func<IProcessGroup, IReadOnlyList<RankSample>> rank);
}

/// <summary>W ranks as threads of this process (<see cref="ProcessGroups.RunInProcess{T}"/>).</summary>
/// <param name="timeout">How long a collective may wait before the run fails.</param>
public sealed class InProcessBenchBackend(TimeSpan timeout) : IBenchBackend
{
    public string Name => "inproc";
    public bool IsReporter => true;
    public string MemoryMethod => "inproc: increase of the process peak RSS (VmHWM, reset before the case) over the RSS before it, divided by W";
    public int? WorldSize => null;
    public bool CanRun(int worldSize) => worldSize >= 1;
    public void Dispose() { }
    public IReadOnlyList<PeakMeasurement> MeasurePeaks(IReadOnlyList<int> threads, int size, int repetitions) =>
        MatmulPeak.Measure(threads, size, repetitions);

    public IReadOnlyList<RankResult> Run(int worldSize, int threadsPerRank, Func<IProcessGroup, IReadOnlyList<RankSample>> rank)
    {
        torch.set_num_threads(threadsPerRank);
        long baseline = MemoryBaseline();
        var samples = ProcessGroups.RunInProcess(worldSize, rank, timeout, threadsPerRank);
        long peak = ProcStatus.PeakResidentBytes();
        long perRank = Math.Max(0, peak - baseline) / worldSize;
        return samples.Select(s => new RankResult(s, perRank, peak)).ToArray();
    }

    /// <summary>Collects garbage (finalizers free native tensors), trims the native heap, resets the peak and returns the resident set.</summary>
    internal static long MemoryBaseline()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        ProcStatus.TrimNativeHeap();
        ProcStatus.ResetPeak();
        return ProcStatus.ResidentBytes();
    }
}

/// <summary>
/// One rank per process (started by `lasp2 launch`); the world group is the MPI communicator. Each
/// rank's samples and memory are gathered with one AllGather after the timed loop (not counted).
/// </summary>
public sealed class MpiBenchBackend(IProcessGroup world) : IBenchBackend
{
    public string Name => "mpi";
    public bool IsReporter => world.Rank == 0;
    public string MemoryMethod => "mpi: per process, increase of peak RSS (VmHWM, reset before the case) over the RSS before it; max over ranks";
    public int? WorldSize => world.WorldSize;
    public bool CanRun(int worldSize) => worldSize == world.WorldSize;
    public void Dispose() => world.Dispose();

    public IReadOnlyList<PeakMeasurement> MeasurePeaks(IReadOnlyList<int> threads, int size, int repetitions)
    {
        var peaks = world.Rank == 0 ? MatmulPeak.Measure(threads, size, repetitions) : MatmulPeak.Unmeasured(threads, size);
        using var scope = NewDisposeScope();
        var shared = world.Broadcast(tensor(peaks.Select(p => p.GflopsPerSecond).ToArray(), dtype: ScalarType.Float64), root: 0)
                          .data<double>().ToArray();
        return peaks.Select((p, i) => p with { GflopsPerSecond = shared[i] }).ToList();
    }

    public IReadOnlyList<RankResult> Run(int worldSize, int threadsPerRank, Func<IProcessGroup, IReadOnlyList<RankSample>> rank)
    {
        if (!CanRun(worldSize))
            throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, $"the MPI world has {world.WorldSize} ranks; launch with -n {worldSize}");
        torch.set_num_threads(threadsPerRank);
        long baseline = InProcessBenchBackend.MemoryBaseline();
        var samples = rank(world);
        long peak = ProcStatus.PeakResidentBytes();
        var packed = new double[samples.Count * RankSample.Width + 2];
        for (int i = 0; i < samples.Count; i++) samples[i].ToArray().CopyTo(packed, i * RankSample.Width);
        packed[^2] = Math.Max(0, peak - baseline);
        packed[^1] = peak;
        using var scope = NewDisposeScope();
        var all = world.AllGather(tensor(packed, dtype: ScalarType.Float64)).data<double>().ToArray(); // [W, width]
        return Enumerable.Range(0, worldSize).Select(r =>
        {
            var row = new ArraySegment<double>(all, r * packed.Length, packed.Length);
            var rankSamples = Enumerable.Range(0, samples.Count)
                .Select(i => RankSample.FromArray(row.AsSpan(i * RankSample.Width, RankSample.Width))).ToArray();
            return new RankResult(rankSamples, (long)row[^2], (long)row[^1]);
        }).ToArray();
    }
}
