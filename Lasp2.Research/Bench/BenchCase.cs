using Lasp2.Research.Attention;
using static TorchSharp.torch;

namespace Lasp2.Research.Bench;

/// <summary>One benchmark configuration.</summary>
/// <param name="Method">Registry name of the method, e.g. "lasp2".</param>
/// <param name="Algorithm">What the method computes, for the flop count.</param>
/// <param name="Backend">"inproc" (W ranks as threads of this process) or "mpi" (one process per rank).</param>
/// <param name="Shape">Layer shape and world size.</param>
/// <param name="Dtype">float32 or float64.</param>
/// <param name="ThreadsPerRank">libtorch intra-op threads of each rank (in-process ranks share one pool of this size).</param>
/// <param name="Warmup">Untimed iterations first (&gt;= 0).</param>
/// <param name="Iterations">Timed iterations (&gt;= 1).</param>
/// <param name="Decay">Per-head lambda, or null for basic linear attention.</param>
/// <param name="Documents">Packed documents as `--docs` gives them (lengths, "random", "equal:K"), or null for one document.</param>
public sealed record BenchCase(
    string Method, FlopAlgorithm Algorithm, string Backend, BenchShape Shape, ScalarType Dtype,
    int ThreadsPerRank, int Warmup, int Iterations, double[]? Decay = null, string? Documents = null)
{
    /// <summary>The packed documents over this case's N (the same on every rank: "random" draws from a fixed seed), or null.</summary>
    public Reference.DocumentBoundaries? DocumentBoundaries =>
        Documents is null ? null : Verification.PackedDocuments.Parse(Documents, Shape.SeqLen, seed: 20250211);

    /// <summary>"causal" or "none".</summary>
    public string Mask => Shape.Causal ? "causal" : "none";

    /// <summary>"float32" / "float64".</summary>
    public string DtypeName => Dtype == ScalarType.Float64 ? "float64" : Dtype == ScalarType.Float32 ? "float32" : Dtype.ToString();

    /// <summary>Bytes per element of <see cref="Dtype"/>.</summary>
    public int ElementSize => Dtype switch
    {
        ScalarType.Float64 => 8,
        ScalarType.Float32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(Dtype), Dtype, "benchmarks run float64, float32, float16 or bfloat16"),
    };

    /// <summary>A short label for progress displays.</summary>
    public string Label => $"{Method} {Backend} W={Shape.WorldSize} N={Shape.SeqLen} {Mask} {DtypeName}" + (Documents is null ? "" : $" docs={Documents}");
}

/// <summary>
/// What one rank measured in one timed iteration: wall and thread-CPU time of forward + backward,
/// time blocked in communication, the traffic and calls recorded by its <see cref="Comm.CommStats"/>, and the
/// process's system CPU time and minor page faults over the iteration (every thread of the rank's process).
/// </summary>
public sealed record RankSample(double WallSeconds, double CpuSeconds, double CommWaitSeconds, long BytesSent, long BytesReceived, long Collectives,
                                double ProcessSystemSeconds = double.NaN, long ProcessMinorFaults = 0)
{
    /// <summary>Number of values <see cref="ToArray"/> packs (for gathering samples over MPI).</summary>
    public const int Width = 8;

    /// <summary>Packs the sample into doubles.</summary>
    public double[] ToArray() => [WallSeconds, CpuSeconds, CommWaitSeconds, BytesSent, BytesReceived, Collectives, ProcessSystemSeconds, ProcessMinorFaults];

    /// <summary>Unpacks <see cref="ToArray"/>.</summary>
    public static RankSample FromArray(ReadOnlySpan<double> x) =>
        new(x[0], x[1], x[2], (long)x[3], (long)x[4], (long)x[5], x[6], (long)x[7]);
}

/// <summary>Everything one rank measured for one case: one sample per timed iteration, and its memory.</summary>
/// <param name="Samples">One per timed iteration.</param>
/// <param name="PeakMemoryBytes">Peak resident-set increase over the case (see <see cref="ProcStatus"/>).</param>
/// <param name="ProcessPeakBytes">Peak resident set of the process during the case.</param>
public sealed record RankResult(IReadOnlyList<RankSample> Samples, long PeakMemoryBytes, long ProcessPeakBytes);
