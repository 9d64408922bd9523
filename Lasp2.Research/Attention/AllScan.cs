using Lasp2.Reference;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// All-Scan (ZeCO, arXiv 2507.01004): the running state travels down the chain of pieces in sequence order, in K
/// column blocks of the state (Dv split in K parts), so that the next rank starts on block j while this one
/// computes block j+1. Each rank applies its own transition, which therefore never travels. Steps as in
/// <see cref="AffineSummaries"/>; the passing (steps 2 and 5) on the rank holding piece u is:
/// <code>
/// forward:  for each column block J: receive P_u[:, J] from the holder of piece u-1 (P_0 = 0),
///           send S_out[:, J] = A_u P_u[:, J] + B_u[:, J] to the holder of piece u+1
/// backward: for each column block J: receive G_u[:, J] from the holder of piece u+1 (G_last = 0),
///           send G_{u-1}[:, J] = A_u^T G_u[:, J] + D_u[:, J] to the holder of piece u-1
/// </code>
/// Consecutive pieces on one rank (zigzag's middle) pass locally. The chain has W-1 hops (contiguous) or
/// 2(W-1) (zigzag); with K blocks the last one arrives after (hops + K - 1) block steps. Causal only.
/// </summary>
/// <param name="columnBlocks">K, the column blocks per state (at most Dv are used).</param>
public sealed class AllScan(int columnBlocks = 4) : ISequenceParallelAttention
{
    /// <summary>K, the column blocks each state is sent in (fewer when Dv &lt; K).</summary>
    public int ColumnBlocks { get; } = columnBlocks >= 1 ? columnBlocks
        : throw new ArgumentOutOfRangeException(nameof(columnBlocks), columnBlocks, "columnBlocks must be >= 1.");

    /// <inheritdoc/>
    public string Name => "all-scan";

    /// <inheritdoc/>
    public MethodCapabilities Supports { get; } =
        new(AttentionKind.Linear, Causal: true, Unmasked: false, Decay: true, [Layout.Contiguous, Layout.Zigzag], GroupedKv: false);

    /// <inheritdoc/>
    public FlopAlgorithm Flops => FlopAlgorithm.ChunkedLinear;

    /// <inheritdoc/>
    public IReadOnlyList<Recurrence> Recurrences => Recurrence.All;

    /// <inheritdoc/>
    public Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options) =>
        AffineSummaries.Forward(this, group, q, k, v, options, recurrence => new Chain(group, recurrence, options.Layout, ColumnBlocks));

    /// <summary>
    /// Per rank and direction: K Sends of column blocks per hop it starts and K Recvs per hop it ends, one state
    /// s = B H Dk Dv e per hop in all; forward the hops go up the chain, backward down it. Sequential steps:
    /// hops + K - 1 (nothing at W = 1).
    /// </summary>
    public CommPrediction PredictComm(CommShape shape, int rank)
    {
        long blocks = Math.Min(ColumnBlocks, shape.DimV);
        var (sends, receives, hops) = Lasp1Ring.ChainHops(shape.WorldSize, shape.Layout, rank);
        long steps = hops == 0 ? 0 : hops + blocks - 1;
        DirectionPrediction Direction(long sent, long received) => new(
            new[] { new CommCallPrediction(CommKind.Send, sent * blocks, sent * shape.StateBytes, 0),
                    new CommCallPrediction(CommKind.Recv, received * blocks, 0, received * shape.StateBytes) }
                .Where(c => c.Calls > 0).ToList(), steps);
        return new(Name, rank, Direction(sends, receives), Direction(receives, sends));
    }

    /// <summary>The chain passing; keeps only this rank's own transitions for backward.</summary>
    sealed class Chain(IProcessGroup group, Recurrence recurrence, Layout layout, int columnBlocks) : StatePassing
    {
        readonly int[] owners = SequenceLayout.PieceOwners(group.WorldSize, layout);
        readonly int[] pieces = Enumerable.Range(0, SequenceLayout.PiecesPerRank(layout))
                                          .Select(slot => SequenceLayout.GlobalPiece(group.Rank, slot, group.WorldSize, layout)).ToArray();
        public override (Tensor[] Entering, Tensor[] Kept) Entering(Tensor[] transitions, Tensor[] states) =>
            // forward: pieces in increasing order, P_0 = 0, the state flows to piece u+1
            (Pass(states, ascending: true, (slot, incoming) => recurrence.Apply(transitions[slot], incoming)), transitions);

        public override Tensor[] Leaving(Tensor[] enteringGradients, Tensor[] kept) =>
            // backward: pieces in decreasing order, G_last = 0, the gradient flows to piece u-1
            Pass(enteringGradients, ascending: false, (slot, incoming) => recurrence.ApplyTransposed(kept[slot], incoming));

        /// <summary>
        /// Runs the chain in one direction. For each local piece (in chain order) its incoming value X (zero at the
        /// chain's start, local if the previous piece is mine, else received in column blocks) and the outgoing
        /// map(X) + added[slot], sent block by block as each block is ready. Returns X per local slot.
        /// </summary>
        Tensor[] Pass(Tensor[] added, bool ascending, Func<int, Tensor, Tensor> map)
        {
            using var scope = NewDisposeScope();
            int step = ascending ? 1 : -1, end = ascending ? owners.Length - 1 : 0, rank = group.Rank;
            var slots = Enumerable.Range(0, pieces.Length).OrderBy(s => step * pieces[s]).ToArray();
            var incoming = new Tensor[pieces.Length];
            Tensor? carried = null;                                                          // outgoing value of my previous piece
            var blocks = Blocks(added[0].shape[^1]);
            foreach (int slot in slots)
            {
                int piece = pieces[slot];
                bool first = piece == (ascending ? 0 : owners.Length - 1);
                int? from = first || owners[piece - step] == rank ? null : owners[piece - step];
                int? to = piece == end || owners[piece + step] == rank ? null : owners[piece + step];
                var parts = new List<Tensor>();
                var outgoing = new List<Tensor>();
                foreach (var (start, length) in blocks)
                {
                    // X[:, J]: zero, carried or received; out[:, J] = map(X[:, J]) + added[:, J], sent at once
                    var part = from is { } source
                        ? group.Recv([.. added[slot].shape[..^1], length], added[slot].dtype, source)
                        : first ? zeros_like(added[slot].narrow(-1, start, length)) : carried!.narrow(-1, start, length);
                    var result = map(slot, part).Plus(added[slot].narrow(-1, start, length));
                    if (to is { } destination) group.Send(result.contiguous(), destination);
                    parts.Add(part);
                    outgoing.Add(result);
                }
                incoming[slot] = cat(parts, -1).MoveToOuterDisposeScope();
                carried = cat(outgoing, -1);
            }
            return incoming;
        }

        /// <summary>K column blocks (start, length) over Dv: the first Dv mod K one column longer.</summary>
        (long Start, long Length)[] Blocks(long dimV)
        {
            long count = Math.Min(columnBlocks, dimV), start = 0;
            var blocks = new (long, long)[count];
            for (long j = 0; j < count; j++)
            {
                long length = dimV / count + (j < dimV % count ? 1 : 0);
                blocks[j] = (start, length);
                start += length;
            }
            return blocks;
        }
    }
}
