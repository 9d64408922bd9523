using Lasp2.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Kernels;

/// <summary>
/// The local chunked linear-attention kernel: forward and hand-written backward for one shard
/// q, k [B,H,C,Dk], v [B,H,C,Dv] with a per-head decay lambda in (0, 1], an optional initial state S_0
/// [B,H,Dk,Dv] (the prefix supplied by communication) and the state after the shard as a result.
/// Blocked: the shard is cut into blocks of <c>blockSize</c> tokens (the last one may be shorter); full
/// blocks are processed in segments of one (batch, head) row, n blocks of at most about 2^20 elements per
/// temporary: each segment is a contiguous [n,L,D] view, so its products are single batched bmm calls that
/// read the inputs in place, and the largest temporary is [n,L,L] (never C x C, bounded whatever C is). Block
/// states are folded in place (StatePrefix: one in-place update per block, no second states tensor). A head with lambda = 1
/// skips every decay factor. With W = 1 and no initial state this is plain single-device chunked linear attention.
///
/// Causal, local index i in the shard, block b with in-block index i' and length L (docs/algorithms.md, "Single-device forms", form 4):
///   s_b = sum_j lambda^(L-1-j) k_j^T v_j,  S_b = lambda^L S_{b-1} + s_b (S_{-1} = S_0; the StatePrefix fold)
///   o_i = lambda^(i'+1) q_i S_{b-1} + sum_{j&lt;=i in b} lambda^(i-j) (q_i . k_j) v_j
/// Unmasked (lambda = 1): o_i = q_i (S_0 + K^T V).
/// Packed documents (causal only): <c>segments</c> = seg of the shard (<see cref="Masks.Segments"/>, int64 [C]) or null.
/// Then q_i reads the state entering its block only if no document starts in the block up to i, k_j enters the
/// block's summary only if none starts after j in it, gamma_b = 0 for a block holding a start, D_L keeps pairs of one
/// document, and the outer state reaches a block only if no start lies between it and the block (so a start inside the
/// shard also cuts the outer prefix / suffix).
/// Phases: forward <see cref="ForwardStates"/> -> <see cref="DiagonalOutput"/> (needs no outer state) ->
/// <see cref="StatesSeen"/> + <see cref="StateOutput"/>; backward <see cref="BackwardStates"/> ->
/// <see cref="DiagonalGradients"/> -> <see cref="StateGradients"/>. LASP-2 starts its AllGather after phase 1 and
/// computes phase 2 while it is in flight; the outer state (prefix / suffix) is folded into the block states,
/// so it costs O(nb Dk Dv) additions, not another pass over the shard.
/// </summary>
public static class ChunkedLinearAttention
{
    /// <summary>Per-block states of one shard: the state entering each block (forward) or the gradient
    /// leaving it (backward) [B,H,nb,Dk,Dv] (null when unmasked), and the shard total [B,H,Dk,Dv].</summary>
    public sealed record BlockStates(Tensor? Blocks, Tensor Total);

    /// <summary>
    /// Output [B,H,C,Dv] and final state [B,H,Dk,Dv] = lambda^C S_0 + m (m = zero-start summary).
    /// <paramref name="blockSize"/> &gt;= 1 (need not divide C); decay null means 1; decay needs causal.
    /// </summary>
    public static (Tensor Output, Tensor State) Forward(Tensor q, Tensor k, Tensor v, double[]? decay, int blockSize,
                                                        bool causal = true, Tensor? initialState = null, Tensor? segments = null)
    {
        using var scope = NewDisposeScope();
        var (output, state, _) = ForwardKeepingStates(q, k, v, decay, blockSize, causal, initialState, segments);
        return (output.MoveToOuterDisposeScope(), state.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// <see cref="Forward"/> that also returns the states each block saw (<see cref="StatesSeen"/> with the initial
    /// state folded in), so that <see cref="Backward"/> can reuse them instead of recomputing ForwardStates: the same
    /// caching policy as LASP-2, which keeps them between its forward and backward.
    /// </summary>
    public static (Tensor Output, Tensor State, Tensor Seen) ForwardKeepingStates(Tensor q, Tensor k, Tensor v, double[]? decay,
        int blockSize, bool causal = true, Tensor? initialState = null, Tensor? segments = null)
    {
        var lambda = Check(q, k, v, decay, blockSize, causal, segments);
        using var scope = NewDisposeScope();
        var states = ForwardStates(k, v, lambda, blockSize, causal, segments);
        var diagonal = DiagonalOutput(q, k, v, states, lambda, blockSize, segments);
        var seen = StatesSeen(states, initialState, lambda, blockSize, q, fromStart: true, segments, reuseLocal: true);
        var output = StateOutput(q, seen, lambda, blockSize, addTo: diagonal, segments);
        var state = initialState is null ? states.Total
            : states.Total.Plus(Transition(lambda, q, segments) * initialState);
        return (output.MoveToOuterDisposeScope(), state.MoveToOuterDisposeScope(), seen.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Hand-written backward of <see cref="Forward"/> for output gradient dO [B,H,C,Dv] and final-state
    /// gradient dState (null = 0). Returns dQ, dK, dV and the gradient of the initial state. <paramref name="seen"/>:
    /// the states each block saw in forward (<see cref="ForwardKeepingStates"/>); null recomputes them. With
    /// <paramref name="consumeSeen"/> the backward states are written into seen's memory once dQ has read it (one
    /// [B,H,nb,Dk,Dv] tensor less at the peak); seen then no longer holds the forward states.
    /// Order: dQ's state term first (it is the only reader of the entering states), then the backward states, the
    /// diagonal blocks and the key-side state terms, so at most one block-state tensor and dQ, dK, dV are alive at once.
    /// </summary>
    public static (Tensor DQ, Tensor DK, Tensor DV, Tensor DInitialState) Backward(
        Tensor q, Tensor k, Tensor v, Tensor dO, double[]? decay, int blockSize, bool causal = true,
        Tensor? initialState = null, Tensor? dState = null, Tensor? seen = null, Tensor? segments = null, bool consumeSeen = false)
    {
        var lambda = Check(q, k, v, decay, blockSize, causal, segments);
        using var scope = NewDisposeScope();
        // Unmasked, the diagonal part needs the forward total m, which the cached states do not hold.
        var forward = seen is null || !causal ? ForwardStates(k, v, lambda, blockSize, causal, segments) : null;
        var entering = seen ?? StatesSeen(forward!, initialState, lambda, blockSize, q, fromStart: true, segments, reuseLocal: true);
        var dqState = QueryStateGradient(dO, entering, lambda, blockSize, addTo: null, segments);
        var reuse = causal && (seen is null || consumeSeen) ? entering : null;
        var backward = BackwardStates(q, dO, lambda, blockSize, causal, segments, into: reuse);
        var diagonal = DiagonalGradients(q, k, v, dO, forward?.Total ?? backward.Total, backward, lambda, blockSize, segments, addToDQ: dqState);
        var leaving = StatesSeen(backward, dState, lambda, blockSize, q, fromStart: false, segments, reuseLocal: true);
        var (dk, dv) = KeyStateGradients(k, v, leaving, lambda, blockSize, addTo: (diagonal.DK, diagonal.DV), segments);
        var dq = diagonal.DQ;
        var dInitial = dState is null ? backward.Total
            : backward.Total.Plus(Transition(lambda, q, segments) * dState);
        return (dq.MoveToOuterDisposeScope(), dk.MoveToOuterDisposeScope(),
                dv.MoveToOuterDisposeScope(), dInitial.MoveToOuterDisposeScope());
    }

    /// <summary>Forward phase 1: block summaries folded into the state entering each block; Total = m.</summary>
    public static BlockStates ForwardStates(Tensor k, Tensor v, double[] lambda, int blockSize, bool causal, Tensor? segments = null)
    {
        ComputeMeter.Add(PhaseFlops.StateProduct(k.shape[0] * k.shape[1], k.shape[2], k.shape[3], v.shape[3]));
        // Alg. 2 step 1 (unmasked, Alg. 1): M_t = K_t^T V_t
        if (!causal) return new BlockStates(null, k.transpose(-2, -1).matmul(v));            // [B,H,Dk,Dv]
        using var scope = NewDisposeScope();
        // s_b = sum_j lambda^(L-1-j) k_j^T v_j;  S_b = lambda^L S_{b-1} + s_b: entering states and the summary m
        var (summaries, gammas) = BlockSummaries(k, v, lambda, blockSize, keySide: true, segments);
        var total = StatePrefix.ExclusiveInPlace(summaries, gammas, dim: 2);  // summaries -> entering states
        return new BlockStates(summaries.MoveToOuterDisposeScope(), total.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Forward phase 2, needing no outer state (LASP-2 runs it while the AllGather is in flight): causal, the
    /// diagonal blocks (Q_b K_b^T (.) D_L) V_b, masked inside the block; unmasked, Q m. [B,H,C,Dv]
    /// Each segment of blocks is written into the output as it is computed; its temporaries are freed at once.
    /// </summary>
    public static Tensor DiagonalOutput(Tensor q, Tensor k, Tensor v, BlockStates states, double[] lambda, int blockSize,
                                        Tensor? segments = null)
    {
        ComputeMeter.Add(PhaseFlops.DiagonalForward(q.shape[0] * q.shape[1], q.shape[2], k.shape[3], v.shape[3], blockSize, states.Blocks is not null));
        if (states.Blocks is null) return q.matmul(states.Total);                            // Alg. 1: Q_t M_t
        var output = TensorPool.Empty([q.shape[0], q.shape[1], q.shape[2], v.shape[3]], q.dtype, q.device);
        var decays = new BlockDecays(lambda, blockSize, q, segments);
        foreach (var segment in Segments(q, v.shape[3], blockSize))
        {
            using var scope = NewDisposeScope();
            var decay = decays.For(segment);
            // O_b = (Q_b K_b^T (.) D_L) V_b
            var scores = decay.Mask(Rows(q, segment).bmm(Rows(k, segment).transpose(1, 2)));  // [n,L,L]
            Rows(output, segment, write: true).copy_(scores.bmm(Rows(v, segment)));           // [n,L,Dv]
        }
        return output;
    }

    /// <summary>
    /// The states each block sees, with an outer state folded in (null = 0). Forward (<paramref name="fromStart"/>):
    /// S_{b-1} + lambda^(start_b) S_0 [B,H,nb,Dk,Dv]; backward: dS_b + lambda^(C-end_b) dState. Unmasked: the outer
    /// state itself [B,H,Dk,Dv] (the local one is in the diagonal part). With <paramref name="reuseLocal"/> the outer
    /// term is added into local.Blocks in place (for callers that no longer need the local states: one [B,H,nb,Dk,Dv]
    /// tensor less at the peak). With <paramref name="segments"/>, the outer state reaches block b only if no document
    /// starts between them.
    /// </summary>
    public static Tensor StatesSeen(BlockStates local, Tensor? outer, double[] lambda, int blockSize, Tensor like, bool fromStart,
                                    Tensor? segments = null, bool reuseLocal = false)
    {
        if (local.Blocks is null) return outer ?? zeros_like(local.Total);
        if (outer is null) return local.Blocks;
        using var scope = NewDisposeScope();
        long n = like.shape[2], blocks = local.Blocks.shape[2];
        var exponents = Enumerable.Range(0, (int)blocks)
            .Select(j => (double)(fromStart ? j * blockSize : n - Math.Min(n, (j + 1L) * blockSize))).ToArray();
        var decay = Powers(lambda, tensor(exponents, dtype: like.dtype, device: like.device), blocked: true);  // [1,H,1,nb,1]
        if (segments is not null)
        {
            // the outer state reaches block b only if no document starts between them: forward seg(start_b - 1) = 0,
            // backward seg(end_b - 1) = seg(C - 1)
            var positions = Enumerable.Range(0, (int)blocks)
                .Select(j => fromStart ? j * (long)blockSize : Math.Min(n, (j + 1L) * blockSize) - 1).ToArray();
            using var index = tensor(positions, dtype: int64, device: like.device);
            var reaches = fromStart ? Previous(segments).index_select(0, index).IsEqualTo(0)
                                    : segments.index_select(0, index).eq(segments.narrow(0, n - 1, 1)); // [nb]
            decay = decay * reaches.to(like.dtype).view(1, 1, 1, -1, 1);
        }
        // S_b + decay_b outer, broadcast in one in-place pass: the [B,H,nb,Dk,Dv] product is never materialised
        var target = reuseLocal ? local.Blocks : local.Blocks.clone();
        target.PlusProductInPlace(decay.transpose(2, 3), outer.unsqueeze(2), 1.0);                  // [1,H,nb,1,1] x [B,H,1,Dk,Dv]
        return reuseLocal ? target : target.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Forward phase 3 (Alg. 2 step 4, O_t += Q_t P_t, fused with the in-shard inter-block term): causal,
    /// lambda^(i'+1) q_i S_seen(b); unmasked, Q S_outer. [B,H,C,Dv], added in place into <paramref name="addTo"/>
    /// when given (e.g. the <see cref="DiagonalOutput"/>, which is then returned) so no second output is allocated.
    /// </summary>
    public static Tensor StateOutput(Tensor q, Tensor seen, double[] lambda, int blockSize, Tensor? addTo = null, Tensor? segments = null)
    {
        ComputeMeter.Add(PhaseFlops.StateProduct(q.shape[0] * q.shape[1], q.shape[2], q.shape[3], seen.shape[^1]));
        var output = addTo ?? TensorPool.Empty([q.shape[0], q.shape[1], q.shape[2], seen.shape[^1]], q.dtype, q.device).zero_();
        if (seen.dim() == 4)
        {
            using var unmasked = NewDisposeScope();
            return output.PlusInPlace(q.matmul(seen));                                        // O += Q S_outer
        }
        var decays = new BlockDecays(lambda, blockSize, q, segments);
        foreach (var segment in Segments(q, seen.shape[^1], blockSize))
        {
            using var scope = NewDisposeScope();
            // o_i += lambda^(i'+1) q_i S_seen(b)
            var product = Rows(q, segment).bmm(StateRows(seen, segment));                   // [n,L,Dv]
            Rows(output, segment, write: true).PlusInPlace(decays.For(segment).Query(product));
        }
        return output;
    }

    /// <summary>
    /// Backward phase 1: per-block q-side summaries d_b = sum_i lambda^(i'+1) q_i^T do_i folded into the
    /// gradient leaving each block from later blocks; Total = dm = sum_i lambda^(i+1) q_i^T do_i.
    /// Causal, <paramref name="into"/> (a [B,H,nb,Dk,Dv] tensor whose contents are no longer needed, e.g. the forward
    /// states once dQ has read them) receives the leaving gradients instead of a new tensor.
    /// </summary>
    public static BlockStates BackwardStates(Tensor q, Tensor dO, double[] lambda, int blockSize, bool causal, Tensor? segments = null,
                                             Tensor? into = null)
    {
        ComputeMeter.Add(PhaseFlops.StateProduct(q.shape[0] * q.shape[1], q.shape[2], q.shape[3], dO.shape[3]));
        // Alg. 3 / Alg. 4 step 1: dM_t = Q_t^T dO_t
        if (!causal) return new BlockStates(null, q.transpose(-2, -1).matmul(dO));           // [B,H,Dk,Dv]
        using var scope = NewDisposeScope();
        // d_b = sum_i lambda^(i'+1) q_i^T do_i;  dS_{b-1} = lambda^L dS_b + d_b: leaving gradients and dm
        var (summaries, gammas) = BlockSummaries(q, dO, lambda, blockSize, keySide: false, segments, into);
        var total = StatePrefix.ExclusiveSuffixInPlace(summaries, gammas, dim: 2); // summaries -> leaving gradients
        return new BlockStates(into ?? summaries.MoveToOuterDisposeScope(), total.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Backward phase 2, needing no outer state (Alg. 4 step 2, run while the AllGather is in flight): causal,
    /// the diagonal blocks with A = Q K^T (.) D, dA = dO V^T (.) D: dQ = dA K, dK = dA^T Q, dV = A^T dO;
    /// unmasked (Alg. 3, local part), dQ = dO m^T, dK = V dm^T, dV = K dm, with m = <paramref name="state"/>
    /// (the forward Total, used unmasked only). Each segment of blocks is written into the preallocated gradients
    /// as it is computed and its temporaries are freed at once: the peak is the three results plus one segment.
    /// dQ is added into <paramref name="addToDQ"/> when given (<see cref="QueryStateGradient"/>'s result).
    /// </summary>
    public static (Tensor DQ, Tensor DK, Tensor DV) DiagonalGradients(Tensor q, Tensor k, Tensor v, Tensor dO,
        Tensor state, BlockStates backward, double[] lambda, int blockSize, Tensor? segments = null, Tensor? addToDQ = null)
    {
        ComputeMeter.Add(PhaseFlops.DiagonalBackward(q.shape[0] * q.shape[1], q.shape[2], k.shape[3], v.shape[3], blockSize, backward.Blocks is not null));
        if (backward.Blocks is null)
        {
            using var unmasked = NewDisposeScope();
            var product = dO.matmul(state.transpose(-2, -1));                                 // [B,H,C,Dk]
            return ((addToDQ is null ? product.MoveToOuterDisposeScope() : addToDQ.PlusInPlace(product)),
                    v.matmul(backward.Total.transpose(-2, -1)).MoveToOuterDisposeScope(),
                    k.matmul(backward.Total).MoveToOuterDisposeScope());
        }
        var (dq, dk, dv) = (addToDQ ?? TensorPool.EmptyLike(q), TensorPool.EmptyLike(k), TensorPool.EmptyLike(v));
        var decays = new BlockDecays(lambda, blockSize, q, segments);
        foreach (var segment in Segments(q, v.shape[3], blockSize))
        {
            using var scope = NewDisposeScope();
            var (qb, kb, vb, dOb) = (Rows(q, segment), Rows(k, segment), Rows(v, segment), Rows(dO, segment)); // [n,L,D]
            var decay = decays.For(segment);
            var scores = decay.Mask(qb.bmm(kb.transpose(1, 2)));                            // A  [n,L,L]
            var dScores = decay.Mask(dOb.bmm(vb.transpose(1, 2)));                          // dA [n,L,L]
            // dQ_b = dA K_b, dK_b = dA^T Q_b, dV_b = A^T dO_b
            var dqRows = Rows(dq, segment, write: true);                                     // [n,L,Dk]
            if (addToDQ is null) dqRows.copy_(dScores.bmm(kb)); else dqRows.PlusInPlace(dScores.bmm(kb));
            Rows(dk, segment, write: true).copy_(dScores.transpose(1, 2).bmm(qb));           // [n,L,Dk]
            Rows(dv, segment, write: true).copy_(scores.transpose(1, 2).bmm(dOb));           // [n,L,Dv]
        }
        return (dq, dk, dv);
    }

    /// <summary>
    /// Backward phase 3 (Alg. 4 step 4, fused with the in-shard inter-block terms), from the states each block
    /// sees (<see cref="StatesSeen"/>: entering S with the prefix P, leaving dS with the suffix G):
    /// dq_i = lambda^(i'+1) do_i S^T, dk_j = lambda^(L-1-j) v_j dS^T, dv_j = lambda^(L-1-j) k_j dS.
    /// Unmasked: dQ = dO P^T, dK = V G^T, dV = K G. Added in place into <paramref name="addTo"/> when given (e.g. the
    /// <see cref="DiagonalGradients"/>, which are then returned), segment by segment, so no second set is allocated.
    /// </summary>
    public static (Tensor DQ, Tensor DK, Tensor DV) StateGradients(Tensor k, Tensor v, Tensor dO, Tensor entering,
        Tensor leaving, double[] lambda, int blockSize, (Tensor DQ, Tensor DK, Tensor DV)? addTo = null, Tensor? segments = null)
    {
        var dq = QueryStateGradient(dO, entering, lambda, blockSize, addTo?.DQ, segments);
        var (dk, dv) = KeyStateGradients(k, v, leaving, lambda, blockSize, addTo is { } a ? (a.DK, a.DV) : null, segments);
        return (dq, dk, dv);
    }

    /// <summary>
    /// dQ's state term (<see cref="StateGradients"/>): dq_i = lambda^(i'+1) do_i S_seen(b)^T (unmasked dO P^T) [B,H,C,Dk],
    /// added into <paramref name="addTo"/> when given, else a new tensor. It is the only backward term that reads the
    /// entering states, so a caller can run it first and reuse their memory (<see cref="Backward"/>).
    /// </summary>
    public static Tensor QueryStateGradient(Tensor dO, Tensor entering, double[] lambda, int blockSize, Tensor? addTo = null,
                                            Tensor? segments = null)
    {
        ComputeMeter.Add(PhaseFlops.StateProduct(dO.shape[0] * dO.shape[1], dO.shape[2], entering.shape[^2], dO.shape[3]));
        if (entering.dim() == 4)
        {
            using var unmasked = NewDisposeScope();
            var product = dO.matmul(entering.transpose(-2, -1));                              // dO P^T [B,H,C,Dk]
            return addTo is null ? product.MoveToOuterDisposeScope() : addTo.PlusInPlace(product);
        }
        var dq = addTo ?? TensorPool.Empty([dO.shape[0], dO.shape[1], dO.shape[2], entering.shape[^2]], dO.dtype, dO.device);
        var decays = new BlockDecays(lambda, blockSize, dO, segments);
        foreach (var segment in Segments(dO, entering.shape[^2], blockSize))
        {
            using var scope = NewDisposeScope();
            // S_{b-1} + decayed P [n,Dk,Dv] -> lambda^(i'+1) do_i S^T [n,L,Dk]
            var term = decays.For(segment).Query(Rows(dO, segment).bmm(StateRows(entering, segment).transpose(1, 2)));
            var rows = Rows(dq, segment, write: true);
            if (addTo is null) rows.copy_(term); else rows.PlusInPlace(term);
        }
        return dq;
    }

    /// <summary>
    /// dK's and dV's state terms (<see cref="StateGradients"/>): dk_j = lambda^(L-1-j) v_j dS^T, dv_j = lambda^(L-1-j) k_j dS
    /// (unmasked V G^T, K G), added into <paramref name="addTo"/> when given, else new tensors.
    /// </summary>
    public static (Tensor DK, Tensor DV) KeyStateGradients(Tensor k, Tensor v, Tensor leaving, double[] lambda, int blockSize,
                                                           (Tensor DK, Tensor DV)? addTo = null, Tensor? segments = null)
    {
        ComputeMeter.Add(2 * PhaseFlops.StateProduct(k.shape[0] * k.shape[1], k.shape[2], k.shape[3], v.shape[3]));
        var (dk, dv) = addTo ?? (TensorPool.EmptyLike(k).zero_(), TensorPool.EmptyLike(v).zero_());                // [B,H,C,Dk], [B,H,C,Dv]
        if (leaving.dim() == 4)
        {
            using var unmasked = NewDisposeScope();
            dk.PlusInPlace(v.matmul(leaving.transpose(-2, -1)));                              // dK += V G^T
            dv.PlusInPlace(k.matmul(leaving));                                                // dV += K G
            return (dk, dv);
        }
        var decays = new BlockDecays(lambda, blockSize, k, segments);
        foreach (var segment in Segments(k, v.shape[3], blockSize))
        {
            using var scope = NewDisposeScope();
            var (kb, vb) = (Rows(k, segment), Rows(v, segment));                            // [n,L,D]
            var decay = decays.For(segment);
            var seenOut = StateRows(leaving, segment);                                       // dS_b + decayed G [n,Dk,Dv]
            Rows(dk, segment, write: true).PlusInPlace(decay.Key(vb.bmm(seenOut.transpose(1, 2))));    // [n,L,Dk]
            Rows(dv, segment, write: true).PlusInPlace(decay.Key(kb.bmm(seenOut)));                    // [n,L,Dv]
        }
        return (dk, dv);
    }

    /// <summary>
    /// The whole shard's output from a zero initial state (diagonal plus in-shard inter-block terms) [B,H,C,Dv],
    /// for callers that add the outer state's term themselves (<see cref="InitialStateOutput"/>).
    /// </summary>
    public static Tensor IntraOutput(Tensor q, Tensor k, Tensor v, BlockStates states, double[] lambda, int blockSize,
                                     Tensor? segments = null)
    {
        var diagonal = DiagonalOutput(q, k, v, states, lambda, blockSize, segments);
        return states.Blocks is null ? diagonal : StateOutput(q, states.Blocks, lambda, blockSize, addTo: diagonal, segments);
    }

    /// <summary>
    /// The outer state's output term lambda^(i+1) q_i S_0 [B,H,C,Dv] (Alg. 2 step 4: Q_t P_t) as a separate pass: the
    /// equation as written, used where it is taught step by step (notebooks); the methods use the fused StateOutput.
    /// </summary>
    public static Tensor InitialStateOutput(Tensor q, Tensor initialState, double[] lambda)
    {
        using var scope = NewDisposeScope();
        var queryDecay = Powers(lambda, Scalars.Range(1, q.shape[2] + 1, q.dtype, q.device), blocked: false);
        return (queryDecay * q).matmul(initialState).MoveToOuterDisposeScope();             // [B,H,C,Dv]
    }

    /// <summary>dQ, dK, dV of the shard with zero initial state and zero final-state gradient (diagonal plus in-shard terms).</summary>
    public static (Tensor DQ, Tensor DK, Tensor DV) IntraGradients(Tensor q, Tensor k, Tensor v, Tensor dO,
        BlockStates forward, BlockStates backward, double[] lambda, int blockSize, Tensor? segments = null)
    {
        var diagonal = DiagonalGradients(q, k, v, dO, forward.Total, backward, lambda, blockSize, segments);
        return forward.Blocks is null || backward.Blocks is null ? diagonal
            : StateGradients(k, v, dO, forward.Blocks, backward.Blocks, lambda, blockSize, addTo: diagonal, segments);
    }

    /// <summary>
    /// The outer states' gradient terms as a separate pass: dq_i = lambda^(i+1) do_i P^T,
    /// dk_j = lambda^(C-1-j) v_j G^T, dv_j = lambda^(C-1-j) k_j G (Alg. 4 step 4).
    /// </summary>
    public static (Tensor DQ, Tensor DK, Tensor DV) InitialStateGradients(Tensor k, Tensor v, Tensor dO, Tensor prefix,
                                                                          Tensor suffix, double[] lambda)
    {
        using var scope = NewDisposeScope();
        long c = k.shape[2];
        var local = Scalars.Range(0, c, k.dtype, k.device);
        var queryDecay = Powers(lambda, local.Plus(1), blocked: false);                      // [1,H,C,1]
        var keyDecay = Powers(lambda, Scalars.Minus(c - 1, local), blocked: false);
        return ((queryDecay * dO.matmul(prefix.transpose(-2, -1))).MoveToOuterDisposeScope(),
                (keyDecay * v.matmul(suffix.transpose(-2, -1))).MoveToOuterDisposeScope(),
                (keyDecay * k.matmul(suffix)).MoveToOuterDisposeScope());
    }

    /// <summary>Validates inputs; returns the per-head lambdas. Exposed for methods built on this kernel.</summary>
    public static double[] Check(Tensor q, Tensor k, Tensor v, double[]? decay, int blockSize, bool causal, Tensor? segments = null)
    {
        var lambda = Guards.LinearAttentionInputs(q, k, v, causal, decay);
        Guards.AtLeast(blockSize, 1, nameof(blockSize));
        if (segments is not null && !causal)
            throw new ArgumentException("document segments need the causal mask in the chunked kernel; pass causal: true.", nameof(segments));
        if (segments is not null && (segments.dim() != 1 || segments.shape[0] != q.shape[2]))
            throw new ArgumentException(
                $"segments must be int64 [C] with C = {q.shape[2]} (one entry per token); got {Guards.Shape(segments)}.", nameof(segments));
        return lambda;
    }

    /// <summary>
    /// The transition across the whole shard [1,H,1,1]: lambda^C, or 0 when a document starts in it (seg(C-1) &gt; 0).
    /// </summary>
    public static Tensor Transition(double[] lambda, Tensor like, Tensor? segments)
    {
        var power = Masks.DecayPower(lambda, like.shape[2], like.dtype, like.device);
        return segments is null || segments[like.shape[2] - 1].item<long>() == 0 ? power : zeros_like(power);
    }

    /// <summary>
    /// Per-block sum_j w_j a_j^T b_j [B,H,nb,Da,Db] with key-side weights w_j = lambda^(L-1-j) (forward states)
    /// or query-side w_i = lambda^(i'+1) (backward states), and each block's transition gamma_b = lambda^L [1,H,nb,1,1]
    /// (0 for a block holding a document start: its state starts from zero).
    /// </summary>
    static (Tensor Summaries, Tensor Gammas) BlockSummaries(Tensor a, Tensor b, double[] lambda, int blockSize, bool keySide,
                                                            Tensor? segments, Tensor? into = null)
    {
        long n = a.shape[2], full = n / blockSize, tail = n % blockSize;
        var summaries = into ?? TensorPool.Empty([a.shape[0], a.shape[1], full + (tail > 0 ? 1 : 0), a.shape[3], b.shape[3]], a.dtype, a.device);
        var decays = new BlockDecays(lambda, blockSize, a, segments);
        foreach (var segment in Segments(a, b.shape[3], blockSize))
        {
            using var scope = NewDisposeScope();
            var decay = decays.For(segment);
            var weighted = keySide ? decay.Key(Rows(a, segment)) : decay.Query(Rows(a, segment)); // [n,L,Da]
            StateRows(summaries, segment).copy_(weighted.transpose(1, 2).bmm(Rows(b, segment)));  // [n,Da,Db]
        }
        var gammas = Masks.DecayPower(lambda, blockSize, a.dtype, a.device).unsqueeze(2).expand(1, lambda.Length, full, 1, 1);
        if (tail > 0) gammas = cat([gammas, Masks.DecayPower(lambda, tail, a.dtype, a.device).unsqueeze(2)], 2);
        if (decays.Carries is { } carries) gammas = gammas * carries.view(1, 1, -1, 1, 1);
        return (summaries, gammas);
    }

    /// <summary>
    /// A run of Count blocks of Length tokens of one (batch, head) row, starting at token Start (block index First):
    /// the full blocks, then the shorter tail.
    /// </summary>
    readonly record struct Segment(long Batch, long Head, long First, long Start, long Count, long Length);

    /// <summary>
    /// Elements per temporary of one segment ([n,L,L], [n,L,D], [n,D,D]): large enough that each batched product
    /// amortises its call, small enough to stay in cache, far below glibc's mmap threshold and a secondary
    /// arena's 64 MiB heap (NativeHeap), so that the blocks are reused instead of faulted in again each iteration.
    /// </summary>
    const long SegmentElements = 1L << 20;

    /// <summary>Blocks per segment: its largest temporary ([n,L,L], [n,L,D] or [n,D,D]) stays within <see cref="SegmentElements"/>.</summary>
    public static long BlocksPerSegment(long blockSize, long dim) =>
        Math.Max(1, SegmentElements / Math.Max(blockSize * blockSize, Math.Max(blockSize, dim) * dim));

    /// <summary>
    /// Segments of one (batch, head) row at a time, so each is a contiguous [n,L,D] view of the [B,H,C,D] tensor and the
    /// batched products (bmm) read it in place. The grouping does not change which block sees what; indices stay global.
    /// </summary>
    static IEnumerable<Segment> Segments(Tensor like, long valueDim, long blockSize)
    {
        long n = like.shape[2], group = BlocksPerSegment(blockSize, Math.Max(like.shape[3], valueDim));
        long full = n / blockSize;
        for (long b = 0; b < like.shape[0]; b++)
            for (long h = 0; h < like.shape[1]; h++)
            {
                for (long first = 0; first < full; first += group)
                    yield return new Segment(b, h, first, first * blockSize, Math.Min(group, full - first), blockSize);
                if (n % blockSize != 0) yield return new Segment(b, h, full, full * blockSize, 1, n % blockSize);
            }
    }

    /// <summary>
    /// [B,H,C,D] -> the segment's blocks [n,L,D]. Inputs may be reshaped copies; a result written into
    /// (<paramref name="write"/>) must be a view, so a non-contiguous one fails loudly instead of losing the writes.
    /// </summary>
    static Tensor Rows(Tensor x, Segment s, bool write = false)
    {
        var rows = x.select(0, s.Batch).select(0, s.Head).narrow(0, s.Start, s.Count * s.Length);     // [n*L,D]
        return write ? rows.view(s.Count, s.Length, x.shape[3]) : rows.reshape(s.Count, s.Length, x.shape[3]);
    }

    /// <summary>[B,H,nb,Dk,Dv] -> the segment's block states [n,Dk,Dv].</summary>
    static Tensor StateRows(Tensor states, Segment s) => states.select(0, s.Batch).select(0, s.Head).narrow(0, s.First, s.Count);

    /// <summary>
    /// The decay factors of one call, per head and block length (full blocks, tail): D_L (lambda^(i-j) on and below the
    /// diagonal), query weights lambda^(i'+1) and key weights lambda^(L-1-j). A head with lambda = 1 applies only the
    /// causal mask, in place, and no weights. With documents, the three seg rules per block, shared by every
    /// (batch, head) row: D_L keeps pairs of one document, q_i reads the entering state only in its segment, k_j reaches
    /// the leaving state only in the last one.
    /// </summary>
    sealed class BlockDecays
    {
        readonly double[] lambda;
        readonly long blockSize;
        readonly Dictionary<long, (Tensor Mask, Tensor Query, Tensor Key)> tables = [];
        readonly Dictionary<long, (Tensor Same, Tensor Reads, Tensor Enters)> documents = [];

        /// <summary>Per block, 1 when no document starts in it (its transition carries the entering state), else 0 [nb]; null without documents.</summary>
        public Tensor? Carries { get; }

        /// <summary>Builds the tables of the lengths <paramref name="like"/> [B,H,C,D] has, once, outside the segment scopes.</summary>
        public BlockDecays(double[] lambda, long blockSize, Tensor like, Tensor? segments = null)
        {
            this.lambda = lambda;
            this.blockSize = blockSize;
            if (segments is not null) Carries = DocumentTables(segments, like);
            if (lambda.All(l => l == 1.0)) return;
            foreach (long length in new[] { blockSize, like.shape[2] % blockSize }.Where(l => l > 0 && l <= like.shape[2]).Distinct())
            {
                tables[length] = (Masks.Decay(length, lambda, like.dtype, like.device),            // [H,L,L]
                                  Powers(lambda, Scalars.Range(1, length + 1, like.dtype, like.device), blocked: false).squeeze(0), // [H,L,1]: i'+1
                                  Powers(lambda, Scalars.Range(length - 1, -1, like.dtype, like.device, step: -1), blocked: false).squeeze(0)); // L-1-j
            }
        }

        /// <summary>
        /// seg per block for the full blocks and the tail: Same [nb,L,L] (seg(i) = seg(j)), Reads [nb,L,1] (seg(i) = seg of
        /// the state entering the block), Enters [nb,L,1] (seg(j) = seg of the block's last token); returns Carries.
        /// </summary>
        Tensor DocumentTables(Tensor segments, Tensor like)
        {
            long n = like.shape[2], full = n / blockSize, tail = n % blockSize;
            var previous = Previous(segments);
            var carries = new List<Tensor>();
            foreach (var (start, count, length) in new[] { (0L, full, blockSize), (full * blockSize, 1L, tail) }.Where(p => p.Item2 > 0 && p.Item3 > 0))
            {
                var blocked = segments.narrow(0, start, count * length).view(count, length);                       // [n,L]
                var entering = previous.narrow(0, start, count * length).view(count, length).narrow(1, 0, 1);       // [n,1]
                var last = blocked.narrow(1, length - 1, 1);                                                         // [n,1]
                documents[length] = (blocked.unsqueeze(-1).eq(blocked.unsqueeze(-2)).to(like.dtype),               // [n,L,L]
                                     blocked.eq(entering).to(like.dtype).unsqueeze(-1),                              // [n,L,1]
                                     blocked.eq(last).to(like.dtype).unsqueeze(-1));                                 // [n,L,1]
                carries.Add(last.eq(entering).to(like.dtype).view(-1));                                              // [n]
            }
            return cat(carries, 0);
        }

        public HeadDecay For(Segment s)
        {
            Tensor? same = null, reads = null, enters = null;
            if (documents.TryGetValue(s.Length, out var document))
            {
                long first = s.Length == blockSize ? s.First : 0;                                  // the tail has its own table
                (same, reads, enters) = (document.Same.narrow(0, first, s.Count), document.Reads.narrow(0, first, s.Count),
                                         document.Enters.narrow(0, first, s.Count));
            }
            if (lambda[s.Head] == 1.0) return new HeadDecay(true, null, null, null, same, reads, enters);
            var table = tables[s.Length];
            return new HeadDecay(false, table.Mask[s.Head], table.Query[s.Head], table.Key[s.Head], same, reads, enters);
        }
    }

    /// <summary>
    /// One head's factors for one block length (decay null when lambda = 1), and the segment's document factors
    /// (null without documents).
    /// </summary>
    readonly record struct HeadDecay(bool Unit, Tensor? MaskTable, Tensor? QueryWeights, Tensor? KeyWeights,
                                     Tensor? Same, Tensor? Reads, Tensor? Enters)
    {
        /// <summary>scores (.) D_L in place [n,L,L]: lower triangle kept (a token sees itself), decayed; one document only.</summary>
        public Tensor Mask(Tensor scores)
        {
            var masked = Unit ? scores.tril_() : scores.mul_(MaskTable!);
            return Same is null ? masked : masked.mul_(Same);
        }

        /// <summary>Rows scaled by lambda^(i'+1) [n,L,D], zero where q_i cannot read the entering state.</summary>
        public Tensor Query(Tensor rows)
        {
            var weighted = Unit ? rows : rows * QueryWeights!;
            return Reads is null ? weighted : weighted * Reads;
        }

        /// <summary>Rows scaled by lambda^(L-1-j) [n,L,D], zero where k_j cannot reach the leaving state.</summary>
        public Tensor Key(Tensor rows)
        {
            var weighted = Unit ? rows : rows * KeyWeights!;
            return Enters is null ? weighted : weighted * Enters;
        }
    }

    /// <summary>seg(i - 1) for every token i (0 for the first): the segment of the state entering at i. int64 [C]</summary>
    static Tensor Previous(Tensor segments) =>
        cat([zeros_like(segments.narrow(0, 0, 1)), segments.narrow(0, 0, segments.shape[0] - 1)]);

    /// <summary>lambda_h^e per exponent e: [1,H,1,L,1] (blocked) or [1,H,L,1].</summary>
    static Tensor Powers(double[] lambda, Tensor exponents, bool blocked)
    {
        var powers = Masks.DecayPowers(lambda, exponents).unsqueeze(-1);                    // [1,H,L,1]
        return blocked ? powers.unsqueeze(2) : powers;
    }
}
