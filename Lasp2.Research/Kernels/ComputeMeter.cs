namespace Lasp2.Research.Kernels;

/// <summary>
/// Floating-point operations executed on the current thread (one rank's thread in an in-process run), as
/// reported by the kernels at each phase (<see cref="PhaseFlops"/>). The simulated network
/// (Simulation/SimulatedProcessGroup) reads it between collectives to charge each rank's compute to its
/// virtual clock; nothing else depends on it. A running total: readers take differences.
/// </summary>
public static class ComputeMeter
{
    [ThreadStatic] static double flops;

    /// <summary>Flops executed on this thread so far.</summary>
    public static double Flops => flops;

    /// <summary>Adds the flops of one kernel phase.</summary>
    public static void Add(double phaseFlops) => flops += phaseFlops;
}

/// <summary>
/// Flops of each kernel phase as executed (2 per multiply-add, matrix products only; a masked block is
/// computed densely and counted densely; fully hidden blocks are skipped by the block kernels and count 0).
/// Rows = B x H (query heads). Shared by the kernels (which report them) and the analytic schedules of
/// Simulation/MethodSchedules (which replay them from shapes).
/// </summary>
public static class PhaseFlops
{
    /// <summary>
    /// Sum of squared block lengths of a shard of <paramref name="length"/> tokens cut into blocks of
    /// <paramref name="blockSize"/> (the last one shorter): the work of the diagonal blocks.
    /// </summary>
    public static double SquaredBlocks(long length, long blockSize) =>
        (double)(length / blockSize) * blockSize * blockSize + (double)(length % blockSize) * (length % blockSize);

    /// <summary>A product of every token with a state, e.g. K^T V, Q S or the per-block summaries: 2 rows C Dk Dv.</summary>
    public static double StateProduct(double rows, long length, long dimK, long dimV) => 2.0 * rows * length * dimK * dimV;

    /// <summary>Chunked forward diagonal blocks (Q_b K_b^T (.) D) V_b: 2 rows sum L_b^2 (Dk + Dv); unmasked Q m.</summary>
    public static double DiagonalForward(double rows, long length, long dimK, long dimV, long blockSize, bool causal) =>
        causal ? 2.0 * rows * SquaredBlocks(length, blockSize) * (dimK + dimV) : StateProduct(rows, length, dimK, dimV);

    /// <summary>Chunked backward diagonal blocks (A, dA, dQ, dK, dV): 2 rows sum L_b^2 (3 Dk + 2 Dv); unmasked 3 state products.</summary>
    public static double DiagonalBackward(double rows, long length, long dimK, long dimV, long blockSize, bool causal) =>
        causal ? 2.0 * rows * SquaredBlocks(length, blockSize) * (3 * dimK + 2 * dimV) : 3 * StateProduct(rows, length, dimK, dimV);

    /// <summary>A query block on a key block, forward (Q K^T then its product with V): 2 rows Cq Ck (Dk + Dv).</summary>
    public static double BlockForward(double rows, long queries, long keys, long dimK, long dimV) =>
        2.0 * rows * queries * keys * (dimK + dimV);

    /// <summary>A query block on a key block, backward (scores again, dP, dQ, dK, dV): 2 rows Cq Ck (3 Dk + 2 Dv).</summary>
    public static double BlockBackward(double rows, long queries, long keys, long dimK, long dimV) =>
        2.0 * rows * queries * keys * (3 * dimK + 2 * dimV);
}
