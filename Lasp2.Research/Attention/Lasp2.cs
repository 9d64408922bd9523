using System.Runtime.CompilerServices;
using Lasp2.Reference;
using Lasp2.Research.Comm;
using Lasp2.Research.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using Kernel = Lasp2.Research.Kernels.ChunkedLinearAttention;

namespace Lasp2.Research.Attention;

/// <summary>
/// LASP-2 for linear attention layers (Sun et al., arXiv 2502.07563): Alg. 1 (forward, no mask),
/// Alg. 2 (forward, causal), Alg. 3 (backward, no mask), Alg. 4 (backward, causal), plus the scalar
/// per-head decay and the zigzag layout of docs/algorithms.md. "Alg. 2 step 3" in the comments is step 3 of
/// "LASP-2 forward" there, "Alg. 4 step 1" step 1 of "LASP-2 backward" (Alg. 1 and 3, without a mask, share them).
///
/// Communication per layer per iteration, per rank: exactly one AllGather in forward (this rank's
/// state summary m_t [B,H,Dk,Dv] per piece, beside its H decays gamma = lambda^length) and one in
/// backward (dm_t [B,H,Dk,Dv] per piece). Contiguous: one piece per rank; zigzag: two, in the same
/// AllGather. Both are issued asynchronously; the diagonal blocks of the intra-shard part (all of it that
/// needs no state) run while they are in flight; the in-shard inter-block terms and Q_t P_t are then one pass.
/// Nothing else is sent: no point-to-point traffic, no reduction, independent of N.
///
/// Rank t holds q, k [B,H,C,Dk], v [B,H,C,Dv] (feature maps already applied; shards may differ in length
/// since each piece's gamma is gathered with its state; zigzag needs an even C). Equations per piece p
/// (local index i, length C_p), with P_p the fold of all earlier pieces wherever they live:
///   m_p = sum_i lambda^(C_p-1-i) k_i^T v_i,   P_p = sum_{u&lt;p} (prod_{u&lt;w&lt;p} gamma_w) m_u
///   o_i = lambda^(i+1) q_i P_p + sum_{j&lt;=i} lambda^(i-j) (q_i . k_j) v_j
/// Unmasked: P_p is the sum over every other piece (lambda = 1), so o = q sum_u m_u.
/// The gradient of P_p is dm_p = sum_i lambda^(i+1) q_i^T do_i; G_p = sum_{u&gt;p} (prod_{p&lt;w&lt;u} gamma_w) dm_u.
/// Backward is hand-written (<see cref="Lasp2Function"/>): autograd never runs through a collective.
/// Packed documents (causal): a document start inside piece p cuts the chain there: gamma_p = 0 (nothing before the
/// start reaches later pieces), m_p holds only the tokens after the piece's last start, and the piece's own tokens read
/// P_p only up to its first start (the chunked kernel resets at every start inside). The fold itself is unchanged,
/// so are the bytes: the same AllGather of [m_p, gamma_p].
/// </summary>
public sealed class Lasp2Attention : ISequenceParallelAttention, IOverlapReporting
{
    /// <inheritdoc/>
    public string Name => "lasp2";

    /// <inheritdoc/>
    public MethodCapabilities Supports { get; } =
        new(AttentionKind.Linear, Causal: true, Unmasked: true, Decay: true, [Layout.Contiguous, Layout.Zigzag], GroupedKv: false,
            DocumentSupport.Causal);

    /// <inheritdoc/>
    public FlopAlgorithm Flops => FlopAlgorithm.ChunkedLinear;

    /// <summary>
    /// One AllGather per direction of P states per rank (P = 1 contiguous, 2 zigzag), the forward one with each
    /// piece's H decays beside its state: (W-1) P (S + H e) forward, (W-1) P S backward, each way; 1 step each.
    /// </summary>
    public CommPrediction PredictComm(CommShape shape, int rank)
    {
        long pieces = SequenceLayout.PiecesPerRank(shape.Layout), w = shape.WorldSize;
        long forward = (w - 1) * pieces * (shape.StateBytes + (long)shape.Heads * shape.ElementSize);
        long backward = (w - 1) * pieces * shape.StateBytes;
        return new(Name, rank, DirectionPrediction.Of(1, (CommKind.AllGather, 1, forward, forward)),
                               DirectionPrediction.Of(1, (CommKind.AllGather, 1, backward, backward)));
    }

    /// <summary>The computation each AllGather hides (Alg. 2/4 step 2), as a group implementing <see cref="IComputePhases"/> is told it.</summary>
    public const string ForwardIntra = "forward intra", BackwardIntra = "backward intra";

    /// <summary>Compute time vs time blocked in Wait for the "forward" and "backward" AllGathers.</summary>
    public OverlapLog Overlap { get; } = new();

    /// <inheritdoc/>
    public Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(options);
        var lambda = Kernel.Check(q, k, v, options.Decay, options.BlockSize, options.Causal);
        if (options.Layout == Layout.Zigzag && q.shape[2] % 2 != 0)
            throw new ArgumentException(
                $"zigzag needs an even local length (two pieces per rank, N divisible by 2W); q has {q.shape[2]} tokens.", nameof(q));
        MethodChecks.Validate(this, group, q, k, v, options);                            // also refuses Gates
        var starts = options.Documents is { } documents
            ? SequenceLayout.PieceDocumentStarts(documents, group.WorldSize, group.Rank, options.Layout) : null;
        return Lasp2Function.apply(new Lasp2Call(group, options, lambda, Overlap, starts), q, k, v)[0];
    }

    /// <summary>What one LASP-2 layer call needs beside its tensors (kept on the autograd context for backward).</summary>
    sealed record Lasp2Call(IProcessGroup Group, AttentionOptions Options, double[] Lambda, OverlapLog Overlap, long[][]? DocumentStarts)
    {
        /// <summary>This rank's pieces of a local tensor [B,H,C,.]: one (contiguous) or two halves (zigzag).</summary>
        public Tensor[] Pieces(Tensor x) => SequenceLayout.LocalPieces(x, Options.Layout);

        /// <summary>seg of each local piece (int64 [C_p], <see cref="Masks.Segments"/>), or nulls for one document.</summary>
        public Tensor?[] Segments(Tensor[] pieces) =>
            pieces.Select((piece, p) => DocumentStarts is null ? null : Masks.Segments(piece.shape[2], DocumentStarts[p], piece.device)).ToArray();

        /// <summary>
        /// Step 3: from every rank's pieces [W,P,B,H,Dk,Dv] and their gammas [W,P,1,H,1,1], this rank's folded state
        /// per piece [P,B,H,Dk,Dv]: causal forward, the exclusive prefix P; causal backward, the exclusive suffix G;
        /// unmasked, both (the sum over every other piece). The fold runs in global piece order (the zigzag rule).
        /// </summary>
        public Tensor Fold(Tensor gathered, Tensor gammas, bool backward)
        {
            var layout = Options.Layout;
            var ordered = SequenceLayout.ToSequenceOrder(gathered, layout);                  // [W*P,B,H,Dk,Dv]
            var orderedGammas = SequenceLayout.ToSequenceOrder(gammas, layout);              // [W*P,1,H,1,1]
            Tensor Before() => StatePrefix.Exclusive(ordered, orderedGammas, dim: 0).Prefixes;
            Tensor After() => StatePrefix.ExclusiveSuffix(ordered, orderedGammas, dim: 0).Suffixes;
            var folded = !Options.Causal ? Before().Plus(After()) : backward ? After() : Before();
            return SequenceLayout.RankPieces(folded, Group.Rank, Group.WorldSize, layout);
        }

        /// <summary>Issues the AllGather of <paramref name="packet"/> asynchronously; its window records the overlap under <paramref name="direction"/>.</summary>
        public OverlapWindow Gather(Tensor packet, string direction) =>
            OverlapWindow.Issue(Group, Overlap, direction, group => group.AllGatherAsync(packet));
    }

    /// <summary>
    /// The forward AllGather's payload: per piece its state m_p [B,H,Dk,Dv] and its transition gamma_p = lambda^(C_p) [H],
    /// side by side in one row, so one collective carries both.
    /// </summary>
    static class StatePacket
    {
        /// <summary>[P, B*H*Dk*Dv + H] from the states [B,H,Dk,Dv] and gammas [1,H,1,1] of this rank's P pieces.</summary>
        public static Tensor Pack(IReadOnlyList<Tensor> states, IReadOnlyList<Tensor> gammas) =>
            stack(states.Zip(gammas, (m, gamma) => cat([m.flatten(), gamma.flatten()])).ToList());

        /// <summary>Every rank's states [W,P,B,H,Dk,Dv] and gammas [W,P,1,H,1,1] from the gathered [W, P, B*H*Dk*Dv + H].</summary>
        public static (Tensor States, Tensor Gammas) Unpack(Tensor gathered, long[] stateShape)
        {
            long worldSize = gathered.shape[0], pieces = gathered.shape[1], heads = stateShape[1];
            long stateSize = stateShape.Aggregate(1L, (a, b) => a * b);
            var states = gathered.narrow(2, 0, stateSize).reshape([worldSize, pieces, .. stateShape]);            // [W,P,B,H,Dk,Dv]
            var gammas = gathered.narrow(2, stateSize, heads).reshape(worldSize, pieces, 1, heads, 1, 1);        // [W,P,1,H,1,1]
            return (states, gammas.contiguous());
        }
    }

    /// <summary>
    /// What backward needs from forward: the inputs, every piece's gamma as gathered [W,P,1,H,1,1] and, per local
    /// piece, its summary m_p [B,H,Dk,Dv] and the states its blocks saw (P_p folded in).
    /// </summary>
    sealed record Saved(Tensor Q, Tensor K, Tensor V, Tensor Gammas, Tensor[] Summaries, Tensor[] Seen)
    {
        public List<Tensor> ToList() => [Q, K, V, Gammas, .. Summaries, .. Seen];

        public static Saved From(IList<Tensor> saved)
        {
            int pieces = (saved.Count - 4) / 2;
            return new(saved[0], saved[1], saved[2], saved[3], saved.Skip(4).Take(pieces).ToArray(), saved.Skip(4 + pieces).ToArray());
        }
    }

    /// <summary>LASP-2 forward (Alg. 1/2) and hand-written backward (Alg. 3/4) on one rank: (call, q, k, v) -> o; do -> (-, dq, dk, dv).</summary>
    sealed class Lasp2Function : autograd.MultiTensorFunction<Lasp2Function>
    {
        public override string Name => nameof(Lasp2Function);

        /// <summary>Context key of the flag set by the first backward: it overwrites the saved states, so a second one would be wrong.</summary>
        const string StatesUsed = "states used";

        static void ConsumeStates(autograd.AutogradContext ctx)
        {
            var used = (StrongBox<bool>)ctx.get_data(StatesUsed);
            if (used.Value)
                throw new InvalidOperationException("LASP-2's backward runs once per forward: it reuses the memory of the saved states.");
            used.Value = true;
        }

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (call, q, k, v) = ((Lasp2Call)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3]);
            var (lambda, block, causal) = (call.Lambda, call.Options.BlockSize, call.Options.Causal);
            using var scope = NewDisposeScope();
            var (qs, ks, vs) = (call.Pieces(q), call.Pieces(k), call.Pieces(v));             // P x [B,H,C_p,.]
            var segments = call.Segments(qs);                                                // P x [C_p] or null
            int pieces = qs.Length;
            var (states, gammas, diagonal, seen, outputs) =
                (new Kernel.BlockStates[pieces], new Tensor[pieces], new Tensor[pieces], new Tensor[pieces], new Tensor[pieces]);
            for (int p = 0; p < pieces; p++)
            {
                // Alg. 2 step 1: M_t = K_t^T V_t, per piece m_p = sum_i lambda^(C_p-1-i) k_i^T v_i (with its block states)
                // (with documents, m_p holds only the tokens after the piece's last document start)
                states[p] = Kernel.ForwardStates(ks[p], vs[p], lambda, block, causal, segments[p]);
                // gamma_p = lambda^(C_p), gathered beside m_p so that pieces of any length fold exactly;
                // 0 when a document starts in the piece, which cuts the chain there
                gammas[p] = Kernel.Transition(lambda, qs[p], segments[p]);                    // [1,H,1,1]
            }
            // Alg. 2 step 1: start the AllGather of [m_p, gamma_p] asynchronously
            var gather = call.Gather(StatePacket.Pack(states.Select(s => s.Total).ToList(), gammas), "forward"); // [P, B*H*Dk*Dv + H]
            // Alg. 2 step 2, while it is in flight: the part of O_intra = [(Q_t K_t^T) (.) Psi] V_t that needs no state,
            // the diagonal blocks (masked inside; unmasked: Q_t M_t)
            using (gather.Computing(ForwardIntra))
                for (int p = 0; p < pieces; p++)
                    diagonal[p] = Kernel.DiagonalOutput(qs[p], ks[p], vs[p], states[p], lambda, block, segments[p]); // [B,H,C_p,Dv]
            var (allStates, allGammas) = StatePacket.Unpack(gather.Wait(), states[0].Total.shape);
            // Alg. 2 step 3: P_p = sum_{u<p} (prod_{u<w<p} gamma_w) m_u in global piece order (unmasked: every other piece)
            var prefixes = call.Fold(allStates, allGammas, backward: false);                // [P,B,H,Dk,Dv]
            for (int p = 0; p < pieces; p++)
            {
                // each block b of piece p sees S_{b-1} + lambda^(start_b) P_p (unmasked: P_p)
                seen[p] = Kernel.StatesSeen(states[p], prefixes[p], lambda, block, qs[p], fromStart: true, segments[p], reuseLocal: true);
                // Alg. 2 step 4: O_t = O_intra + Q_t P_t, the inter-block terms of O_intra fused with Q_t P_t
                outputs[p] = Kernel.StateOutput(qs[p], seen[p], lambda, block, addTo: diagonal[p], segments[p]); // [B,H,C_p,Dv]
            }
            var output = SequenceLayout.JoinLocalPieces(outputs);                            // [B,H,C,Dv]

            // Alg. 2 step 4: cache P_t (inside the states seen), the summaries and the gammas for backward
            var saved = new Saved(q, k, v, allGammas, states.Select(s => s.Total).ToArray(), seen);
            foreach (var tensor in saved.ToList().Skip(3)) tensor.MoveToOuterDisposeScope(); // kept after forward returns
            ctx.save_for_backward(saved.ToList());
            ctx.save_data("call", call);
            ctx.save_data(StatesUsed, new StrongBox<bool>());
            return [output.MoveToOuterDisposeScope()];
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var call = (Lasp2Call)ctx.get_data("call");
            var (lambda, block, causal) = (call.Lambda, call.Options.BlockSize, call.Options.Causal);
            ConsumeStates(ctx);
            using var scope = NewDisposeScope();
            var saved = Saved.From(ctx.get_saved_variables());
            var (qs, ks, vs, dOs) = (call.Pieces(saved.Q), call.Pieces(saved.K), call.Pieces(saved.V), call.Pieces(gradOutputs[0]));
            var segments = call.Segments(qs);                                                // P x [C_p] or null
            int pieces = qs.Length;
            var (backwardStates, diagonal, dqs) = (new Kernel.BlockStates[pieces], new (Tensor DQ, Tensor DK, Tensor DV)[pieces], new Tensor[pieces]);
            for (int p = 0; p < pieces; p++)
            {
                // Alg. 4 step 4 for dQ first: dQ_t = dO_t P_t^T fused with the inter-block terms; it is the only reader of the
                // states the blocks saw, so their memory then holds the backward states (one [B,H,nb,Dk,Dv] less at the peak)
                dqs[p] = Kernel.QueryStateGradient(dOs[p], saved.Seen[p], lambda, block, addTo: null, segments[p]);   // [B,H,C_p,Dk]
                // Alg. 4 step 1: dM_t = Q_t^T dO_t, per piece dm_p = sum_i lambda^(i+1) q_i^T do_i (with its block gradients)
                backwardStates[p] = Kernel.BackwardStates(qs[p], dOs[p], lambda, block, causal, segments[p], into: causal ? saved.Seen[p] : null);
            }
            // Alg. 4 step 1: start the AllGather of [dm_p] asynchronously (the gammas are the forward's)
            var gather = call.Gather(stack(backwardStates.Select(s => s.Total).ToList()), "backward"); // [P,B,H,Dk,Dv]
            // Alg. 4 step 2, while it is in flight: the intra gradients that need no state (A = Q K^T (.) Psi,
            // dA = dO V^T (.) Psi on the diagonal blocks: dQ = dA K, dK = dA^T Q, dV = A^T dO)
            using (gather.Computing(BackwardIntra))
                for (int p = 0; p < pieces; p++)
                    diagonal[p] = Kernel.DiagonalGradients(qs[p], ks[p], vs[p], dOs[p], saved.Summaries[p], backwardStates[p], lambda, block, segments[p],
                                                           addToDQ: dqs[p]);
            var gathered = gather.Wait();                                                    // [W,P,B,H,Dk,Dv]
            // Alg. 4 step 3: G_p = sum_{u>p} (prod_{p<w<u} gamma_w) dm_u in global piece order (unmasked: every other piece)
            var suffixes = call.Fold(gathered, saved.Gammas, backward: true);               // [P,B,H,Dk,Dv]
            for (int p = 0; p < pieces; p++)
            {
                // each block b leaves dS_b + lambda^(C_p-end_b) G_p (unmasked: G_p)
                var leaving = Kernel.StatesSeen(backwardStates[p], suffixes[p], lambda, block, qs[p], fromStart: false, segments[p], reuseLocal: true);
                // Alg. 4 step 4: dK_t += V_t G_t^T, dV_t += K_t G_t, fused with the inter-block terms
                // (added in place into the diagonal gradients)
                Kernel.KeyStateGradients(ks[p], vs[p], leaving, lambda, block, addTo: (diagonal[p].DK, diagonal[p].DV), segments[p]);
            }
            return [null!,
                    SequenceLayout.JoinLocalPieces(diagonal.Select(d => d.DQ).ToList()).MoveToOuterDisposeScope(), // [B,H,C,Dk]
                    SequenceLayout.JoinLocalPieces(diagonal.Select(d => d.DK).ToList()).MoveToOuterDisposeScope(), // [B,H,C,Dk]
                    SequenceLayout.JoinLocalPieces(diagonal.Select(d => d.DV).ToList()).MoveToOuterDisposeScope()]; // [B,H,C,Dv]
        }
    }
}
