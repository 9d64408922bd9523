using Lasp2.Reference;
using System.Diagnostics;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>
/// Latency of one collective: before each timed call the ranks meet at a Barrier, then each rank times its
/// own call. Reported: the median over iterations of the slowest rank's time (the time until every rank has
/// its result), gathered with one AllReduce at the end. A few untimed warm-up calls come first.
/// </summary>
public static class CommLatency
{
    /// <summary>Median seconds of an AllGather of <paramref name="elements"/> float32 per rank.</summary>
    public static double AllGather(IProcessGroup group, long elements, int iterations, int warmup = 5)
    {
        ArgumentNullException.ThrowIfNull(group);
        if (elements < 1) throw new ArgumentOutOfRangeException(nameof(elements), elements, "elements must be >= 1.");
        if (iterations < 1) throw new ArgumentOutOfRangeException(nameof(iterations), iterations, "iterations must be >= 1.");
        using var scope = NewDisposeScope();
        var state = randn(elements, dtype: float32);
        var seconds = new double[iterations];
        for (int i = -warmup; i < iterations; i++)
        {
            group.Barrier();
            long started = Stopwatch.GetTimestamp();
            group.AllGather(state).Dispose();
            if (i >= 0) seconds[i] = Stopwatch.GetElapsedTime(started).TotalSeconds;
        }
        var slowest = group.AllReduce(tensor(seconds, dtype: float64), ReduceOp.Max).data<double>().ToArray();
        Array.Sort(slowest);
        return slowest[iterations / 2];
    }

    /// <summary>
    /// Median seconds to allocate and first touch a float32 tensor of <paramref name="elements"/>: the floor under
    /// any collective that returns a new result of that size (on virtual machines page faults dominate).
    /// </summary>
    public static double FirstTouch(long elements, int iterations)
    {
        if (elements < 1) throw new ArgumentOutOfRangeException(nameof(elements), elements, "elements must be >= 1.");
        if (iterations < 1) throw new ArgumentOutOfRangeException(nameof(iterations), iterations, "iterations must be >= 1.");
        var seconds = new double[iterations];
        for (int i = 0; i < iterations; i++)
        {
            long started = Stopwatch.GetTimestamp();
            using (var result = empty(elements, dtype: float32)) result.Fill(0);
            seconds[i] = Stopwatch.GetElapsedTime(started).TotalSeconds;
        }
        Array.Sort(seconds);
        return seconds[iterations / 2];
    }
}
