using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>How a sequence of N tokens is laid out over W ranks.</summary>
public enum Layout
{
    /// <summary>Rank t holds the contiguous chunk t of C = N / W tokens. Requires N % W == 0.</summary>
    Contiguous,
    /// <summary>
    /// Load-balanced: the sequence is cut into 2W pieces of N / (2W) tokens and rank r holds pieces r and
    /// 2W-1-r, in that order. Requires N % (2W) == 0.
    /// </summary>
    Zigzag,
}

/// <summary>A run of consecutive global tokens [Start, Start + Length) held by one rank.</summary>
public readonly record struct Piece(long Start, long Length);

/// <summary>
/// Splitting a sequence (dimension 2 of [B, H, N, D] by default) into W rank shards and back, for both
/// layouts. Used by every distributed method and by the tests, so the two cannot disagree.
/// </summary>
public static class SequenceLayout
{
    /// <summary>Throws unless N splits evenly for the layout (N % W, or N % 2W for zigzag).</summary>
    public static void CheckDivisible(long n, int worldSize, Layout layout)
    {
        Guards.AtLeast(worldSize, 1, nameof(worldSize));
        long parts = PiecesPerRank(layout) * worldSize;
        if (n % parts != 0)
            throw new ArgumentException(
                layout == Layout.Zigzag
                    ? $"sequence length {n} is not divisible by 2 * worldSize = {parts} (zigzag cuts it into 2W equal pieces)."
                    : $"sequence length {n} is not divisible by worldSize = {worldSize} (each rank holds N / W tokens).",
                "n");
    }

    /// <summary>Pieces per rank: 1 (contiguous) or 2 (zigzag).</summary>
    public static int PiecesPerRank(Layout layout) => layout == Layout.Zigzag ? 2 : 1;

    /// <summary>
    /// The piece order, stated once for every method: the global sequence index of the piece a rank holds in
    /// local slot <paramref name="slot"/>. Contiguous (W pieces), rank r holds piece r; zigzag (2W pieces),
    /// rank r holds pieces r and 2W-1-r, in that order.
    /// </summary>
    public static int GlobalPiece(int rank, int slot, int worldSize, Layout layout) =>
        layout == Layout.Contiguous || slot == 0 ? rank : 2 * worldSize - 1 - rank;

    /// <summary>The rank holding each global piece, in sequence order (W pieces contiguous, 2W zigzag).</summary>
    public static int[] PieceOwners(int worldSize, Layout layout)
    {
        var owners = new int[PiecesPerRank(layout) * worldSize];
        for (int rank = 0; rank < worldSize; rank++)
            for (int slot = 0; slot < PiecesPerRank(layout); slot++)
                owners[GlobalPiece(rank, slot, worldSize, layout)] = rank;
        return owners;
    }

    /// <summary>The global pieces rank <paramref name="rank"/> holds, in local order.</summary>
    public static IReadOnlyList<Piece> Pieces(long n, int worldSize, int rank, Layout layout)
    {
        CheckDivisible(n, worldSize, layout);
        if (rank < 0 || rank >= worldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {worldSize - 1}].");
        long length = n / (PiecesPerRank(layout) * worldSize);
        return Enumerable.Range(0, PiecesPerRank(layout))
                         .Select(slot => new Piece(GlobalPiece(rank, slot, worldSize, layout) * length, length)).ToList();
    }

    /// <summary>
    /// A rank's local tensor cut into its pieces along <paramref name="dim"/>, in local order: the whole shard
    /// (contiguous) or its two equal halves (zigzag). Views, no copy.
    /// </summary>
    public static Tensor[] LocalPieces(Tensor local, Layout layout, int dim = 2)
    {
        long length = local.shape[dim] / PiecesPerRank(layout);
        return Enumerable.Range(0, PiecesPerRank(layout)).Select(slot => local.narrow(dim, slot * length, length)).ToArray();
    }

    /// <summary>The inverse of <see cref="LocalPieces"/>: one piece is returned as is (no copy), two are concatenated along <paramref name="dim"/>.</summary>
    public static Tensor JoinLocalPieces(IList<Tensor> pieces, int dim = 2) => pieces.Count == 1 ? pieces[0] : cat(pieces, dim);

    /// <summary>
    /// Every rank's pieces, gathered in rank order [W, P, ...] (P pieces per rank), re-ordered into global
    /// sequence order [W * P, ...]: a scan over the result gives each piece the fold of all earlier pieces
    /// wherever they live (the zigzag rule).
    /// </summary>
    public static Tensor ToSequenceOrder(Tensor gathered, Layout layout)
    {
        int worldSize = (int)gathered.shape[0], piecesPerRank = (int)gathered.shape[1];
        if (piecesPerRank != PiecesPerRank(layout))
            throw new ArgumentException(
                $"gathered holds {piecesPerRank} pieces per rank but layout {layout} has {PiecesPerRank(layout)}.", nameof(gathered));
        var order = new long[worldSize * piecesPerRank];
        for (int rank = 0; rank < worldSize; rank++)
            for (int slot = 0; slot < piecesPerRank; slot++)
                order[GlobalPiece(rank, slot, worldSize, layout)] = rank * piecesPerRank + slot;
        using var index = tensor(order, device: gathered.device);
        return gathered.flatten(0, 1).index_select(0, index);
    }

    /// <summary>Picks rank <paramref name="rank"/>'s pieces [P, ...] back out of a sequence-ordered [W * P, ...] tensor.</summary>
    public static Tensor RankPieces(Tensor sequenceOrdered, int rank, int worldSize, Layout layout)
    {
        var slots = Enumerable.Range(0, PiecesPerRank(layout))
                              .Select(slot => (long)GlobalPiece(rank, slot, worldSize, layout)).ToArray();
        using var index = tensor(slots, device: sequenceOrdered.device);
        return sequenceOrdered.index_select(0, index);
    }

    /// <summary>
    /// The document starts inside each of rank <paramref name="rank"/>'s pieces, in the piece's local coordinates
    /// and local piece order (one array per piece, ascending; 0 when a document starts at the piece's first token).
    /// A piece with no start continues the document of the piece before it in sequence order.
    /// </summary>
    public static long[][] PieceDocumentStarts(DocumentBoundaries documents, int worldSize, int rank, Layout layout)
    {
        ArgumentNullException.ThrowIfNull(documents);
        return Pieces(documents.Length, worldSize, rank, layout).Select(p => documents.StartsWithin(p.Start, p.Length)).ToArray();
    }

    /// <summary>Global token positions held by a rank, in local order: int64 [N / W].</summary>
    public static Tensor Positions(long n, int worldSize, int rank, Layout layout, Device? device = null) =>
        cat(Pieces(n, worldSize, rank, layout)
                .Select(p => Scalars.Range(p.Start, p.Start + p.Length, int64, device)).ToList(), 0);

    /// <summary>The shard of rank <paramref name="rank"/>: a new tensor (differentiable) along <paramref name="dim"/>.</summary>
    public static Tensor ShardOf(Tensor x, int worldSize, int rank, Layout layout, int dim = 2)
    {
        var pieces = Pieces(x.shape[dim], worldSize, rank, layout);
        return cat(pieces.Select(p => x.narrow(dim, p.Start, p.Length)).ToList(), dim).clone();
    }

    /// <summary>All W shards, rank order.</summary>
    public static Tensor[] Shard(Tensor x, int worldSize, Layout layout, int dim = 2)
    {
        CheckDivisible(x.shape[dim], worldSize, layout);
        return Enumerable.Range(0, worldSize).Select(rank => ShardOf(x, worldSize, rank, layout, dim)).ToArray();
    }

    /// <summary>Inverse of <see cref="Shard"/>: puts every rank's tokens back in global order.</summary>
    public static Tensor Unshard(IReadOnlyList<Tensor> shards, Layout layout, int dim = 2)
    {
        int worldSize = shards.Count;
        Guards.AtLeast(worldSize, 1, nameof(shards));
        long shardLength = shards[0].shape[dim];
        for (int r = 1; r < worldSize; r++)
            if (shards[r].shape[dim] != shardLength)
                throw new ArgumentException(
                    $"shard {r} has {shards[r].shape[dim]} tokens but shard 0 has {shardLength}; shards must be equal.", nameof(shards));
        long n = shardLength * worldSize;
        var ordered = new (long Start, Tensor Part)[PiecesPerRank(layout) * worldSize];
        int slot = 0;
        for (int rank = 0; rank < worldSize; rank++)
        {
            long offset = 0;
            foreach (var piece in Pieces(n, worldSize, rank, layout))
            {
                ordered[slot++] = (piece.Start, shards[rank].narrow(dim, offset, piece.Length));
                offset += piece.Length;
            }
        }
        return cat(ordered.OrderBy(p => p.Start).Select(p => p.Part).ToList(), dim);
    }
}
