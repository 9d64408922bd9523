namespace Lasp2.Research.Bench;

/// <summary>
/// Analytic resident peak of one causal chunked-linear layer (the single-device kernel or one LASP-2 rank), forward +
/// backward as the benchmark runs it (docs/benchmarks.md, "Memory model"): with T = B H C d E bytes (one [B,H,C,d]
/// tensor of the rank's C tokens) and S = B H ceil(C/L) d^2 E (the block states),
/// peak = 4T (q, k, v, dO held by the caller) + T (output) + S (block states: kept from forward, then reused for the
///        backward ones, each folded in place) + 3T (dQ, dK, dV) + segment temporaries.
/// These are the live tensors; what the process holds beyond them is the allocator's (<see cref="HeapFactor"/>).
/// </summary>
public static class MemoryModel
{
    /// <summary>Elements per kernel temporary (ChunkedLinearAttention segments), times the temporaries alive at once.</summary>
    const double SegmentElements = 4.0 * (1 << 20);

    /// <summary>The methods the model describes.</summary>
    public static bool Covers(string method) => method is BenchTargets.Lasp2 or BenchTargets.Chunked;

    /// <summary>Predicted peak bytes of live tensors per rank for <paramref name="shape"/> (causal) with <paramref name="elementSize"/>-byte elements.</summary>
    public static double PeakBytesPerRank(BenchShape shape, int elementSize)
    {
        double rows = (double)shape.Batch * shape.Heads, t = rows * shape.LocalLen * shape.HeadDim * elementSize;
        double blocks = Math.Ceiling(shape.LocalLen / (double)shape.BlockSize);
        double s = rows * blocks * shape.HeadDim * shape.HeadDim * elementSize;
        return 8 * t + s + SegmentElements * elementSize;
    }

    /// <summary>
    /// Resident bytes per live byte the native heap needs. Tuned (NativeHeap, TensorPool), the kernel's large tensors come
    /// from pooled mappings, and a rank's free mappings wait in the pool while other ranks map new ones: measured 1.11x the
    /// model (kernel, 256K tokens) and 1.37x (LASP-2, W = 8 in-process, 512K), so a sweep budgets 1.5. With glibc's
    /// defaults every block above 32 MiB is mmap-ed and unmapped on free, so the resident peak is the live one (measured
    /// within 6 % of the model).
    /// </summary>
    public static double HeapFactor => NativeHeap.State.StartsWith("tuned", StringComparison.Ordinal) ? 1.5 : 1;
}
