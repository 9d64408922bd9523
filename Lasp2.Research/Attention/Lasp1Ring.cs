using Lasp2.Reference;
using Lasp2.Research.Comm;
using Lasp2.Research.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// LASP-1 (Sun et al. 2024, arXiv 2404.02882): the memory states travel along a chain of point-to-point
/// messages. Forward on the rank holding piece p: compute the local summary and the intra output, wait for
/// P_p from the holder of piece p-1, send P_{p+1} = lambda^L P_p + m_p to the holder of piece p+1, then add
/// the inter term lambda^(i+1) Q_p P_p. Backward mirrors it from the end: wait for G_p (the gradient of the
/// state leaving piece p) from the holder of piece p+1, send G_{p-1} = lambda^L G_p + dm_p back.
/// One Send and one Recv of one state [B,H,Dk,Dv] per hop; the chain has W-1 hops (contiguous) or 2(W-1)
/// (zigzag: pieces 0..W-1 on ranks 0..W-1, then W..2W-1 back down), each a sequential step. The local work
/// is lasp2's chunked kernel (<see cref="ChunkedLinearAttention"/>) split into its phases, the prefix
/// supplied by the chain. Causal only (an unmasked layer would need the suffix too); decay supported.
/// Packed documents: a piece holding a document start passes P_{p+1} = m_p on (its transition is 0), and its kernel
/// resets at every start inside; the messages and their sizes do not change.
/// </summary>
public sealed class Lasp1Ring : ISequenceParallelAttention
{
    public string Name => "lasp1";

    public MethodCapabilities Supports => new(AttentionKind.Linear, Causal: true, Unmasked: false, Decay: true,
        [Layout.Contiguous, Layout.Zigzag], GroupedKv: false, DocumentSupport.Causal);

    public FlopAlgorithm Flops => FlopAlgorithm.ChunkedLinear;

    /// <summary>
    /// The chain over the pieces in sequence order: a hop whenever consecutive pieces live on different ranks,
    /// one Send and one Recv of S per hop; forward prefixes travel up the chain, backward suffix gradients down
    /// it. Every rank waits through the whole chain: steps = its hops (W-1 contiguous, 2(W-1) zigzag).
    /// </summary>
    public CommPrediction PredictComm(CommShape shape, int rank)
    {
        var (sends, receives, hops) = ChainHops(shape.WorldSize, shape.Layout, rank);
        return new(Name, rank,
            DirectionPrediction.Of(hops, (CommKind.Send, sends, sends * shape.StateBytes, 0),
                                         (CommKind.Recv, receives, 0, receives * shape.StateBytes)),
            DirectionPrediction.Of(hops, (CommKind.Send, receives, receives * shape.StateBytes, 0),
                                         (CommKind.Recv, sends, 0, sends * shape.StateBytes)));
    }

    /// <summary>
    /// A chain over the pieces in sequence order (shared by every chain method): a hop whenever consecutive pieces
    /// live on different ranks; the hops <paramref name="rank"/> starts (sends) and ends (receives), and all of them.
    /// </summary>
    public static (long Sends, long Receives, long Hops) ChainHops(int worldSize, Layout layout, int rank)
    {
        var owners = SequenceLayout.PieceOwners(worldSize, layout);
        long sends = 0, receives = 0, hops = 0;
        for (int piece = 1; piece < owners.Length; piece++)
        {
            if (owners[piece - 1] == owners[piece]) continue;
            hops++;
            if (owners[piece - 1] == rank) sends++;
            if (owners[piece] == rank) receives++;
        }
        return (sends, receives, hops);
    }

    public Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options)
    {
        var decay = MethodChecks.Validate(this, group, q, k, v, options);
        var starts = options.Documents is { } documents
            ? SequenceLayout.PieceDocumentStarts(documents, group.WorldSize, group.Rank, options.Layout) : null;
        return ChainFunction.apply(new Chain(group, options.Layout, decay, options.BlockSize, q, starts), q, k, v)[0];
    }

    /// <summary>This rank's place in the chain: its pieces (local slots, sequence order) and their neighbours.</summary>
    sealed record Chain(IProcessGroup Group, Layout Layout, double[] Decay, int BlockSize, long PieceLength, int[] Owners, int[] Pieces,
                        long[][]? DocumentStarts)
    {
        public Chain(IProcessGroup group, Layout layout, double[] decay, int blockSize, Tensor q, long[][]? documentStarts)
            : this(group, layout, decay, blockSize, q.shape[2] / SequenceLayout.PiecesPerRank(layout),
                   SequenceLayout.PieceOwners(group.WorldSize, layout),
                   Enumerable.Range(0, SequenceLayout.PiecesPerRank(layout))
                             .Select(slot => SequenceLayout.GlobalPiece(group.Rank, slot, group.WorldSize, layout)).ToArray(),
                   documentStarts) { }

        public Tensor[] Slots(Tensor x) => SequenceLayout.LocalPieces(x, Layout);

        /// <summary>seg of the piece in local slot <paramref name="slot"/> (int64 [L]), or null for one document.</summary>
        public Tensor? Segments(int slot, Tensor like) =>
            DocumentStarts is null ? null : Masks.Segments(PieceLength, DocumentStarts[slot], like.device);

        /// <summary>The transition across one piece [1,H,1,1]: lambda^L, or 0 when a document starts in it.</summary>
        public Tensor PieceDecay(Tensor like, Tensor? segments) => ChunkedLinearAttention.Transition(Decay, like, segments);
    }

    /// <summary>O and the prefix P_p that entered each of this rank's pieces.</summary>
    static (Tensor Output, Tensor[] Prefixes) ForwardPass(Chain chain, Tensor q, Tensor k, Tensor v)
    {
        var (group, owners) = (chain.Group, chain.Owners);
        var (qs, ks, vs) = (chain.Slots(q), chain.Slots(k), chain.Slots(v));            // P x [B,H,L,.]
        var outputs = new Tensor[chain.Pieces.Length];
        var prefixes = new Tensor[chain.Pieces.Length];
        Tensor? carried = null;                                                          // state after my previous piece
        for (int slot = 0; slot < chain.Pieces.Length; slot++)
        {
            int piece = chain.Pieces[slot];
            var (qp, kp, vp) = (qs[slot], ks[slot], vs[slot]);
            var segments = chain.Segments(slot, qp);                                     // [L] or null
            // While P_p is in flight: m_p and the diagonal blocks' output (LASP-1: compute overlaps the wait)
            var states = ChunkedLinearAttention.ForwardStates(kp, vp, chain.Decay, chain.BlockSize, causal: true, segments);
            var diagonal = ChunkedLinearAttention.DiagonalOutput(qp, kp, vp, states, chain.Decay, chain.BlockSize, segments); // [B,H,L,Dv]
            var prefix = piece == 0 ? zeros_like(states.Total)
                : owners[piece - 1] == group.Rank ? carried!
                : group.Recv(states.Total.shape, q.dtype, owners[piece - 1]);            // P_p [B,H,Dk,Dv]
            // P_{p+1} = lambda^L P_p + m_p, sent on at once so the next rank can start (lambda^L = 0 across a document start)
            var next = (chain.PieceDecay(qp, segments) * prefix).Plus(states.Total);
            if (piece + 1 < owners.Length)
            {
                if (owners[piece + 1] == group.Rank) carried = next;
                else group.Send(next, owners[piece + 1]);
            }
            // o_i = lambda^(i'+1) q_i (S_{b-1} + lambda^(start_b) P_p) + diagonal: the same fused pass as LASP-2
            var seen = ChunkedLinearAttention.StatesSeen(states, prefix, chain.Decay, chain.BlockSize, qp, fromStart: true, segments);
            outputs[slot] = ChunkedLinearAttention.StateOutput(qp, seen, chain.Decay, chain.BlockSize, addTo: diagonal, segments);
            prefixes[slot] = prefix;
        }
        return (cat(outputs, 2), prefixes);
    }

    /// <summary>dQ, dK, dV with the suffix G_p of each piece arriving down the chain.</summary>
    static (Tensor DQ, Tensor DK, Tensor DV) BackwardPass(Chain chain, Tensor q, Tensor k, Tensor v, Tensor dO, Tensor[] prefixes)
    {
        var (group, owners) = (chain.Group, chain.Owners);
        var (qs, ks, vs, dOs) = (chain.Slots(q), chain.Slots(k), chain.Slots(v), chain.Slots(dO)); // P x [B,H,L,.]
        var (dqs, dks, dvs) = (new Tensor[chain.Pieces.Length], new Tensor[chain.Pieces.Length], new Tensor[chain.Pieces.Length]);
        Tensor? carried = null;                                                          // gradient into my next piece's prefix
        for (int slot = chain.Pieces.Length - 1; slot >= 0; slot--)
        {
            int piece = chain.Pieces[slot];
            var (qp, kp, vp, dOp) = (qs[slot], ks[slot], vs[slot], dOs[slot]);
            var segments = chain.Segments(slot, qp);                                     // [L] or null
            // While G_p is in flight: dm_p and the diagonal blocks' gradients
            var forward = ChunkedLinearAttention.ForwardStates(kp, vp, chain.Decay, chain.BlockSize, causal: true, segments);
            var backward = ChunkedLinearAttention.BackwardStates(qp, dOp, chain.Decay, chain.BlockSize, causal: true, segments);
            var diagonal = ChunkedLinearAttention.DiagonalGradients(qp, kp, vp, dOp, forward.Total, backward, chain.Decay, chain.BlockSize, segments);
            var suffix = piece == owners.Length - 1 ? zeros_like(backward.Total)
                : owners[piece + 1] == group.Rank ? carried!
                : group.Recv(backward.Total.shape, q.dtype, owners[piece + 1]);          // G_p [B,H,Dk,Dv]
            // G_{p-1} = lambda^L G_p + dm_p, sent back at once
            var previous = (chain.PieceDecay(qp, segments) * suffix).Plus(backward.Total);
            if (piece > 0)
            {
                if (owners[piece - 1] == group.Rank) carried = previous;
                else group.Send(previous, owners[piece - 1]);
            }
            // dq_i += lambda^(i+1) do_i P_p^T;  dk_j += lambda^(L-1-j) v_j G_p^T;  dv_j += lambda^(L-1-j) k_j G_p,
            // fused with the in-piece inter-block terms (the same pass as LASP-2)
            var entering = ChunkedLinearAttention.StatesSeen(forward, prefixes[slot], chain.Decay, chain.BlockSize, qp, fromStart: true, segments);
            var leaving = ChunkedLinearAttention.StatesSeen(backward, suffix, chain.Decay, chain.BlockSize, qp, fromStart: false, segments);
            (dqs[slot], dks[slot], dvs[slot]) = ChunkedLinearAttention.StateGradients(kp, vp, dOp, entering, leaving,
                chain.Decay, chain.BlockSize, addTo: diagonal, segments);
        }
        return (cat(dqs, 2), cat(dks, 2), cat(dvs, 2));
    }

    /// <summary>Autograd glue: the chain's messages run inside forward and backward, never under autograd.</summary>
    sealed class ChainFunction : autograd.MultiTensorFunction<ChainFunction>
    {
        public override string Name => nameof(ChainFunction);

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (chain, q, k, v) = ((Chain)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3]);
            using var noGrad = no_grad();
            var (output, prefixes) = ForwardPass(chain, q, k, v);
            ctx.save_data("chain", chain);
            ctx.save_data("prefixes", prefixes);
            ctx.save_for_backward([q, k, v]);
            return [output];
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var saved = ctx.get_saved_variables();
            var (dQ, dK, dV) = BackwardPass((Chain)ctx.get_data("chain"), saved[0], saved[1], saved[2], gradOutputs[0],
                                            (Tensor[])ctx.get_data("prefixes"));
            return [null!, dQ, dK, dV];
        }
    }
}
