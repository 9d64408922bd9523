namespace Lasp2.Research.Bench;

/// <summary>
/// Analytic resident peak of one causal chunked-linear layer (the single-device kernel or one LASP-2 rank), forward +
/// backward as the benchmark runs it (docs/benchmarks.md, "Memory model"): with T = B H C d E bytes (one [B,H,C,d]
/// tensor of the rank's C tokens) and S = B H ceil(C/L) d^2 E (the block states),
/// peak = 4T (q, k, v, dO held by the caller) + T (output) + S (states kept for backward)
///      + max(2S (backward summaries and their fold), S + 3T (dQ, dK, dV)) + segment temporaries.
/// </summary>
public static class MemoryModel
{
    /// <summary>Elements per kernel temporary (ChunkedLinearAttention segments), times the temporaries alive at once.</summary>
    const double SegmentElements = 4.0 * (1 << 20);

    /// <summary>The methods the model describes.</summary>
    public static bool Covers(string method) => method is BenchTargets.Lasp2 or BenchTargets.Chunked;

    /// <summary>Predicted peak bytes per rank for <paramref name="shape"/> (causal) with <paramref name="elementSize"/>-byte elements.</summary>
    public static double PeakBytesPerRank(BenchShape shape, int elementSize)
    {
        double rows = (double)shape.Batch * shape.Heads, t = rows * shape.LocalLen * shape.HeadDim * elementSize;
        double blocks = Math.Ceiling(shape.LocalLen / (double)shape.BlockSize);
        double s = rows * blocks * shape.HeadDim * shape.HeadDim * elementSize;
        return 4 * t + t + s + Math.Max(2 * s, s + 3 * t) + SegmentElements * elementSize;
    }
}
