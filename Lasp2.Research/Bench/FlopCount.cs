using Lasp2.Reference;
using Lasp2.Research.Attention;

namespace Lasp2.Research.Bench;

/// <summary>The layer one benchmark configuration runs.</summary>
/// <param name="Batch">B (&gt;= 1).</param>
/// <param name="Heads">Query heads H (&gt;= 1).</param>
/// <param name="KvHeads">Key/value heads (divides H; equals H for linear attention).</param>
/// <param name="SeqLen">Total sequence length N over all ranks (&gt;= 1).</param>
/// <param name="HeadDim">d_k = d_v (&gt;= 1).</param>
/// <param name="BlockSize">Block length of chunked kernels (&gt;= 1).</param>
/// <param name="Causal">Causal mask (true) or none.</param>
/// <param name="WorldSize">Ranks the sequence is split over (&gt;= 1, divides N).</param>
public sealed record BenchShape(int Batch, int Heads, int KvHeads, long SeqLen, int HeadDim, int BlockSize, bool Causal, int WorldSize)
{
    /// <summary>Tokens per rank, C = N / W.</summary>
    public long LocalLen => SeqLen / WorldSize;
}

/// <summary>
/// Floating-point operations of one layer's forward + backward pass, per method.
/// </summary>
/// <remarks>
/// Convention (<see cref="Convention"/>): 2 flops per multiply-add; only matrix products count
/// (masks, decay factors, softmax exponentials and sums are elementwise and left out). A causal mask
/// counts only the work the mask keeps: an n x n masked block needs n(n+1)/2 query-key pairs (diagonal
/// included), so masked-out multiplications a dense kernel still performs are not credited. Backward is
/// twice the forward: every forward product C = A B has the two products dA = dC B^T and dB = A^T dC
/// of the same size (all of q, k, v and the states need gradients); recomputation is not counted.
/// Work is counted for the method's own algorithm, so a left-product Ring (linear) is charged the
/// quadratic work it really needs, and LASP-1 / LASP-2 the chunked work of the single-device kernel
/// (the prefix replaces the previous block's state; the fold over ranks is elementwise).
/// </remarks>
public static class FlopCount
{
    /// <summary>The counting convention, as written into the CSV and charts.</summary>
    public const string Convention =
        "2 flops per multiply-add; matrix products only; causal = only the pairs the mask keeps (n(n+1)/2 per n x n block); " +
        "backward = 2 x forward (dA and dB per product C = AB); fwd+bwd = 3 x forward; each method's own algorithm";

    /// <summary>Forward + backward flops of one layer (all ranks together), with packed <paramref name="documents"/> if given.</summary>
    public static double ForwardBackward(FlopAlgorithm algorithm, BenchShape shape, DocumentBoundaries? documents = null) =>
        3 * Forward(algorithm, shape, documents);

    /// <summary>
    /// Forward flops of one layer (all ranks together). With packed <paramref name="documents"/> the pair-wise algorithms
    /// keep only the pairs inside a document (sum over documents of n_d(n_d+1)/2 causal, n_d^2 unmasked): the work
    /// a method that skips fully masked blocks approaches, and the only work the convention credits. The chunked
    /// linear form does the same products with or without documents (a document start is a mask, not a product).
    /// </summary>
    public static double Forward(FlopAlgorithm algorithm, BenchShape shape, DocumentBoundaries? documents = null)
    {
        Validate(shape);
        double d = shape.HeadDim;
        double rows = (double)shape.Batch * shape.Heads;
        return algorithm switch
        {
            FlopAlgorithm.ChunkedLinear => rows * ChunkedPerHead(shape.SeqLen, shape.WorldSize, shape.BlockSize, d, shape.Causal),
            // O = (Q K^T (.) M) V and softmax(Q K^T) V: one d_k product and one d_v product per kept pair.
            FlopAlgorithm.LeftProductLinear or FlopAlgorithm.Softmax => rows * 2 * DocumentPairs(shape, documents) * (d + d),
            _ => throw new ArgumentOutOfRangeException(nameof(algorithm), algorithm, "unknown FlopAlgorithm"),
        };
    }

    /// <summary>Query-key pairs inside the documents (one document: all N tokens).</summary>
    static double DocumentPairs(BenchShape shape, DocumentBoundaries? documents)
    {
        if (documents is null) return Pairs(shape.SeqLen, shape.Causal);
        documents.CheckLength(shape.SeqLen, nameof(documents));
        return documents.Lengths.Sum(n => Pairs(n, shape.Causal));
    }

    /// <summary>Query-key pairs an n x n attention needs: n(n+1)/2 causal, n^2 unmasked.</summary>
    public static double Pairs(long n, bool causal) => causal ? n * (n + 1.0) / 2 : (double)n * n;

    // Chunked linear attention for one (batch row, head): each rank's shard is cut into blocks of
    // BlockSize (the last one shorter), the rank boundary acting as a block boundary.
    static double ChunkedPerHead(long n, int worldSize, int blockSize, double d, bool causal)
    {
        // Right product: M = K^T V and O = Q M, 2 n d_k d_v each.
        if (!causal) return 4.0 * n * d * d;
        long local = n / worldSize;
        long fullBlocks = local / blockSize, tail = local % blockSize;
        double intraPairs = fullBlocks * Pairs(blockSize, true) + Pairs(tail, true);
        // State K_b^T V_b and inter Q_b S_{b-1}: 2 C d_k d_v each; intra (Q_b K_b^T (.) Psi) V_b: 2 pairs (d_k + d_v).
        return worldSize * (4.0 * local * d * d + 2 * intraPairs * (d + d));
    }

    static void Validate(BenchShape s)
    {
        if (s.Batch < 1) throw new ArgumentOutOfRangeException(nameof(s.Batch), s.Batch, "batch must be >= 1");
        if (s.Heads < 1) throw new ArgumentOutOfRangeException(nameof(s.Heads), s.Heads, "heads must be >= 1");
        if (s.KvHeads < 1 || s.Heads % s.KvHeads != 0)
            throw new ArgumentOutOfRangeException(nameof(s.KvHeads), s.KvHeads, $"kv heads must be >= 1 and divide heads ({s.Heads})");
        if (s.HeadDim < 1) throw new ArgumentOutOfRangeException(nameof(s.HeadDim), s.HeadDim, "head dim must be >= 1");
        if (s.BlockSize < 1) throw new ArgumentOutOfRangeException(nameof(s.BlockSize), s.BlockSize, "block size must be >= 1");
        if (s.WorldSize < 1) throw new ArgumentOutOfRangeException(nameof(s.WorldSize), s.WorldSize, "world size must be >= 1");
        if (s.SeqLen < 1 || s.SeqLen % s.WorldSize != 0)
            throw new ArgumentOutOfRangeException(nameof(s.SeqLen), s.SeqLen, $"sequence length must be >= 1 and a multiple of the world size ({s.WorldSize})");
    }
}
