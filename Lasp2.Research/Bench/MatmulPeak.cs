using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Bench;

/// <summary>One measured matmul ceiling: the best of repeated n x n products through libtorch.</summary>
public sealed record PeakMeasurement(ScalarType Dtype, int Threads, int Size, double GflopsPerSecond);

/// <summary>
/// The machine's matmul ceiling as libtorch reaches it, measured at the start of every benchmark
/// (float32 and float64, 1 and 2 intra-op threads). The best repetition counts: the ceiling is what
/// the hardware can do, not what it did on average while shared.
/// </summary>
public static class MatmulPeak
{
    /// <summary>Measures every (dtype, threads) pair; restores the previous thread count.</summary>
    /// <param name="threads">Intra-op thread counts to measure (each &gt;= 1).</param>
    /// <param name="size">Matrix side n (&gt;= 64); 2048 by default.</param>
    /// <param name="repetitions">Timed products per pair (&gt;= 1) after two warm-up products.</param>
    public static IReadOnlyList<PeakMeasurement> Measure(IReadOnlyList<int> threads, int size = 2048, int repetitions = 8)
    {
        if (size < 64) throw new ArgumentOutOfRangeException(nameof(size), size, "matrix size must be >= 64");
        if (repetitions < 1) throw new ArgumentOutOfRangeException(nameof(repetitions), repetitions, "repetitions must be >= 1");
        int previous = torch.get_num_threads();
        try
        {
            return Unmeasured(threads, size).Select(p =>
            {
                torch.set_num_threads(p.Threads);
                return p with { GflopsPerSecond = Best(p.Dtype, size, repetitions) };
            }).ToList();
        }
        finally
        {
            torch.set_num_threads(previous);
        }
    }

    /// <summary>The (dtype, threads) pairs <see cref="Measure"/> measures, in its order, with NaN GFLOP/s.</summary>
    public static IReadOnlyList<PeakMeasurement> Unmeasured(IReadOnlyList<int> threads, int size) =>
        (from dtype in new[] { ScalarType.Float32, ScalarType.Float64 }
         from t in threads
         select t >= 1 ? new PeakMeasurement(dtype, t, size, double.NaN)
                       : throw new ArgumentOutOfRangeException(nameof(threads), t, "thread counts must be >= 1")).ToList();

    /// <summary>The measured ceiling for <paramref name="dtype"/> at <paramref name="threads"/> (the nearest measured count below or at it).</summary>
    public static double For(IReadOnlyList<PeakMeasurement> peaks, ScalarType dtype, int threads)
    {
        var match = peaks.Where(p => p.Dtype == dtype && p.Threads <= Math.Max(1, threads)).MaxBy(p => p.Threads);
        return match?.GflopsPerSecond ?? double.NaN;
    }

    static double Best(ScalarType dtype, int n, int repetitions)
    {
        using var scope = NewDisposeScope();
        using var _ = torch.no_grad();
        var a = randn(n, n, dtype: dtype);
        var b = randn(n, n, dtype: dtype);
        for (int i = 0; i < 2; i++) a.matmul(b).Dispose();
        double best = double.MaxValue;
        for (int i = 0; i < repetitions; i++)
        {
            var watch = Stopwatch.StartNew();
            using var c = a.matmul(b);
            best = Math.Min(best, watch.Elapsed.TotalSeconds);
        }
        return 2.0 * n * n * n / best / 1e9;
    }
}
