using Lasp2.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Kernels;

/// <summary>
/// The local chunked linear-attention kernel: forward and hand-written backward for one shard
/// q, k [B,H,C,Dk], v [B,H,C,Dv] with a per-head decay lambda in (0, 1], an optional initial state S_0
/// [B,H,Dk,Dv] (the prefix supplied by communication) and the state after the shard as a result.
/// Blocked: the shard is cut into blocks of <c>blockSize</c> tokens (the last one may be shorter); full
/// blocks are processed in batches [B,H,n,L,.] of about 2^20 elements, so the largest temporary is
/// [B,H,n,L,L] (never C x C, and bounded whatever C is). With W = 1 and no initial state this is plain
/// single-device chunked linear attention.
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
        var lambda = Check(q, k, v, decay, blockSize, causal, segments);
        using var scope = NewDisposeScope();
        var states = ForwardStates(k, v, lambda, blockSize, causal, segments);
        var seen = StatesSeen(states, initialState, lambda, blockSize, q, fromStart: true, segments);
        var output = StateOutput(q, seen, lambda, blockSize, addTo: DiagonalOutput(q, k, v, states, lambda, blockSize, segments), segments);
        var state = initialState is null ? states.Total
            : states.Total + Transition(lambda, q, segments) * initialState;
        return (output.MoveToOuterDisposeScope(), state.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Hand-written backward of <see cref="Forward"/> for output gradient dO [B,H,C,Dv] and final-state
    /// gradient dState (null = 0). Returns dQ, dK, dV and the gradient of the initial state.
    /// </summary>
    public static (Tensor DQ, Tensor DK, Tensor DV, Tensor DInitialState) Backward(
        Tensor q, Tensor k, Tensor v, Tensor dO, double[]? decay, int blockSize, bool causal = true,
        Tensor? initialState = null, Tensor? dState = null, Tensor? segments = null)
    {
        var lambda = Check(q, k, v, decay, blockSize, causal, segments);
        using var scope = NewDisposeScope();
        var forward = ForwardStates(k, v, lambda, blockSize, causal, segments);
        var backward = BackwardStates(q, dO, lambda, blockSize, causal, segments);
        var (dq, dk, dv) = StateGradients(k, v, dO,
            StatesSeen(forward, initialState, lambda, blockSize, q, fromStart: true, segments),
            StatesSeen(backward, dState, lambda, blockSize, q, fromStart: false, segments), lambda, blockSize,
            addTo: DiagonalGradients(q, k, v, dO, forward.Total, backward, lambda, blockSize, segments), segments);
        var dInitial = dState is null ? backward.Total
            : backward.Total + Transition(lambda, q, segments) * dState;
        return (dq.MoveToOuterDisposeScope(), dk.MoveToOuterDisposeScope(),
                dv.MoveToOuterDisposeScope(), dInitial.MoveToOuterDisposeScope());
    }

    /// <summary>Forward phase 1: block summaries folded into the state entering each block; Total = m.</summary>
    public static BlockStates ForwardStates(Tensor k, Tensor v, double[] lambda, int blockSize, bool causal, Tensor? segments = null)
    {
        // Alg. 2 step 1 (unmasked, Alg. 1): M_t = K_t^T V_t
        if (!causal) return new BlockStates(null, k.transpose(-2, -1).matmul(v));            // [B,H,Dk,Dv]
        using var scope = NewDisposeScope();
        // s_b = sum_j lambda^(L-1-j) k_j^T v_j;  S_b = lambda^L S_{b-1} + s_b: entering states and the summary m
        var (summaries, gammas) = BlockSummaries(k, v, lambda, blockSize, keySide: true, segments);
        var (prefixes, total) = StatePrefix.Exclusive(summaries, gammas, dim: 2);
        return new BlockStates(prefixes.MoveToOuterDisposeScope(), total.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Forward phase 2, needing no outer state (LASP-2 runs it while the AllGather is in flight): causal, the
    /// diagonal blocks (Q_b K_b^T (.) D_L) V_b, masked inside the block; unmasked, Q m. [B,H,C,Dv]
    /// Each batch of blocks is written into the output as it is computed; its temporaries are freed at once.
    /// </summary>
    public static Tensor DiagonalOutput(Tensor q, Tensor k, Tensor v, BlockStates states, double[] lambda, int blockSize,
                                        Tensor? segments = null)
    {
        if (states.Blocks is null) return q.matmul(states.Total);                            // Alg. 1: Q_t M_t
        var output = empty(q.shape[0], q.shape[1], q.shape[2], v.shape[3], dtype: q.dtype, device: q.device);
        foreach (var segment in Segments(q, blockSize))
        {
            using var scope = NewDisposeScope();
            // O_b = (Q_b K_b^T (.) D_L) V_b
            var scores = Blocks(q, segment).matmul(Blocks(k, segment).transpose(-2, -1)).mul_(DecayMask(lambda, segment, q, segments)); // [B,H,n,L,L]
            Blocks(output, segment).copy_(scores.matmul(Blocks(v, segment)));               // [B,H,n,L,Dv]
        }
        return output;
    }

    /// <summary>
    /// The states each block sees, with an outer state folded in (null = 0). Forward (<paramref name="fromStart"/>):
    /// S_{b-1} + lambda^(start_b) S_0 [B,H,nb,Dk,Dv]; backward: dS_b + lambda^(C-end_b) dState. Unmasked: the outer
    /// state itself [B,H,Dk,Dv] (the local one is in the diagonal part).
    /// </summary>
    public static Tensor StatesSeen(BlockStates local, Tensor? outer, double[] lambda, int blockSize, Tensor like, bool fromStart,
                                    Tensor? segments = null)
    {
        if (local.Blocks is null) return outer ?? zeros_like(local.Total);
        if (outer is null) return local.Blocks;
        using var scope = NewDisposeScope();
        long n = like.shape[2];
        var blocks = Segments(like, blockSize)
            .SelectMany(s => Enumerable.Range(0, (int)s.Count).Select(j => (Start: s.Start + j * s.Length, End: s.Start + (j + 1) * s.Length)))
            .ToArray();
        var exponents = blocks.Select(b => (double)(fromStart ? b.Start : n - b.End)).ToArray();
        var decay = Powers(lambda, tensor(exponents, dtype: like.dtype, device: like.device), blocked: true);  // [1,H,1,nb,1]
        if (segments is not null)
        {
            // the outer state reaches block b only if no document starts between them: forward seg(start_b - 1) = 0,
            // backward seg(end_b - 1) = seg(C - 1)
            var (previous, last) = (Previous(segments), segments[n - 1]);
            using var index = tensor(blocks.Select(b => fromStart ? b.Start : b.End - 1).ToArray(), dtype: int64, device: like.device);
            var reaches = fromStart ? previous.index_select(0, index).IsAtLeast(1).logical_not() : segments.index_select(0, index) == last; // [nb]
            decay = decay * reaches.to(like.dtype).view(1, 1, 1, -1, 1);
        }
        return (local.Blocks + decay.transpose(2, 3) * outer.unsqueeze(2)).MoveToOuterDisposeScope();       // [B,H,nb,Dk,Dv]
    }

    /// <summary>
    /// Forward phase 3 (Alg. 2 step 4, O_t += Q_t P_t, fused with the in-shard inter-block term): causal,
    /// lambda^(i'+1) q_i S_seen(b); unmasked, Q S_outer. [B,H,C,Dv], added in place into <paramref name="addTo"/>
    /// when given (e.g. the <see cref="DiagonalOutput"/>, which is then returned) so no second output is allocated.
    /// </summary>
    public static Tensor StateOutput(Tensor q, Tensor seen, double[] lambda, int blockSize, Tensor? addTo = null, Tensor? segments = null)
    {
        var output = addTo ?? zeros(q.shape[0], q.shape[1], q.shape[2], seen.shape[^1], dtype: q.dtype, device: q.device);
        if (seen.dim() == 4)
        {
            using var unmasked = NewDisposeScope();
            return output.add_(q.matmul(seen));                                              // O += Q S_outer
        }
        foreach (var segment in Segments(q, blockSize))
        {
            using var scope = NewDisposeScope();
            // o_i += lambda^(i'+1) q_i S_seen(b)
            var queryDecay = Reads(Powers(lambda, Local(segment, q) + 1, blocked: true), segment, segments); // [1,H,n|1,L,1]
            var seenIn = seen.narrow(2, segment.Start / blockSize, segment.Count);           // [B,H,n,Dk,Dv]
            Blocks(output, segment).add_((queryDecay * Blocks(q, segment)).matmul(seenIn)); // [B,H,n,L,Dv]
        }
        return output;
    }

    /// <summary>
    /// Backward phase 1: per-block q-side summaries d_b = sum_i lambda^(i'+1) q_i^T do_i folded into the
    /// gradient leaving each block from later blocks; Total = dm = sum_i lambda^(i+1) q_i^T do_i.
    /// </summary>
    public static BlockStates BackwardStates(Tensor q, Tensor dO, double[] lambda, int blockSize, bool causal, Tensor? segments = null)
    {
        // Alg. 3 / Alg. 4 step 1: dM_t = Q_t^T dO_t
        if (!causal) return new BlockStates(null, q.transpose(-2, -1).matmul(dO));           // [B,H,Dk,Dv]
        using var scope = NewDisposeScope();
        // d_b = sum_i lambda^(i'+1) q_i^T do_i;  dS_{b-1} = lambda^L dS_b + d_b: leaving gradients and dm
        var (summaries, gammas) = BlockSummaries(q, dO, lambda, blockSize, keySide: false, segments);
        var (suffixes, total) = StatePrefix.ExclusiveSuffix(summaries, gammas, dim: 2);
        return new BlockStates(suffixes.MoveToOuterDisposeScope(), total.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Backward phase 2, needing no outer state (Alg. 4 step 2, run while the AllGather is in flight): causal,
    /// the diagonal blocks with A = Q K^T (.) D, dA = dO V^T (.) D: dQ = dA K, dK = dA^T Q, dV = A^T dO;
    /// unmasked (Alg. 3, local part), dQ = dO m^T, dK = V dm^T, dV = K dm, with m = <paramref name="state"/>
    /// (the forward Total, used unmasked only). Each batch of blocks is written into the preallocated gradients
    /// as it is computed and its temporaries are freed at once: the peak is the three results plus one batch.
    /// </summary>
    public static (Tensor DQ, Tensor DK, Tensor DV) DiagonalGradients(Tensor q, Tensor k, Tensor v, Tensor dO,
        Tensor state, BlockStates backward, double[] lambda, int blockSize, Tensor? segments = null)
    {
        if (backward.Blocks is null)
        {
            using var unmasked = NewDisposeScope();
            return (dO.matmul(state.transpose(-2, -1)).MoveToOuterDisposeScope(),
                    v.matmul(backward.Total.transpose(-2, -1)).MoveToOuterDisposeScope(),
                    k.matmul(backward.Total).MoveToOuterDisposeScope());
        }
        var (dq, dk, dv) = (empty_like(q), empty_like(k), empty_like(v));
        foreach (var segment in Segments(q, blockSize))
        {
            using var scope = NewDisposeScope();
            var (qb, kb, vb, dOb) = (Blocks(q, segment), Blocks(k, segment), Blocks(v, segment), Blocks(dO, segment));
            var mask = DecayMask(lambda, segment, q, segments);                              // [1,H,n|1,L,L]
            var scores = qb.matmul(kb.transpose(-2, -1)).mul_(mask);                         // A  [B,H,n,L,L]
            var dScores = dOb.matmul(vb.transpose(-2, -1)).mul_(mask);                       // dA [B,H,n,L,L]
            // dQ_b = dA K_b, dK_b = dA^T Q_b, dV_b = A^T dO_b
            Blocks(dq, segment).copy_(dScores.matmul(kb));                                   // [B,H,n,L,Dk]
            Blocks(dk, segment).copy_(dScores.transpose(-2, -1).matmul(qb));                 // [B,H,n,L,Dk]
            Blocks(dv, segment).copy_(scores.transpose(-2, -1).matmul(dOb));                 // [B,H,n,L,Dv]
        }
        return (dq, dk, dv);
    }

    /// <summary>
    /// Backward phase 3 (Alg. 4 step 4, fused with the in-shard inter-block terms), from the states each block
    /// sees (<see cref="StatesSeen"/>: entering S with the prefix P, leaving dS with the suffix G):
    /// dq_i = lambda^(i'+1) do_i S^T, dk_j = lambda^(L-1-j) v_j dS^T, dv_j = lambda^(L-1-j) k_j dS.
    /// Unmasked: dQ = dO P^T, dK = V G^T, dV = K G. Added in place into <paramref name="addTo"/> when given (e.g. the
    /// <see cref="DiagonalGradients"/>, which are then returned), batch by batch, so no second set is allocated.
    /// </summary>
    public static (Tensor DQ, Tensor DK, Tensor DV) StateGradients(Tensor k, Tensor v, Tensor dO, Tensor entering,
        Tensor leaving, double[] lambda, int blockSize, (Tensor DQ, Tensor DK, Tensor DV)? addTo = null, Tensor? segments = null)
    {
        var (dq, dk, dv) = addTo ?? (zeros_like(k), zeros_like(k), zeros_like(v));              // dQ, dK [B,H,C,Dk], dV [B,H,C,Dv]
        if (entering.dim() == 4)
        {
            using var unmasked = NewDisposeScope();
            dq.add_(dO.matmul(entering.transpose(-2, -1)));                                  // dQ += dO P^T
            dk.add_(v.matmul(leaving.transpose(-2, -1)));                                    // dK += V G^T
            dv.add_(k.matmul(leaving));                                                      // dV += K G
            return (dq, dk, dv);
        }
        foreach (var segment in Segments(k, blockSize))
        {
            using var scope = NewDisposeScope();
            var (kb, vb, dOb) = (Blocks(k, segment), Blocks(v, segment), Blocks(dO, segment));
            var local = Local(segment, k);
            var queryDecay = Reads(Powers(lambda, local + 1, blocked: true), segment, segments);                 // [1,H,n|1,L,1]
            var keyDecay = Enters(Powers(lambda, segment.Length - 1 - local, blocked: true), segment, segments);
            long first = segment.Start / blockSize;
            var seenIn = entering.narrow(2, first, segment.Count);                           // S_{b-1} + decayed P
            var seenOut = leaving.narrow(2, first, segment.Count);                           // dS_b + decayed G
            Blocks(dq, segment).add_(queryDecay * dOb.matmul(seenIn.transpose(-2, -1)));    // [B,H,n,L,Dk]
            Blocks(dk, segment).add_(keyDecay * vb.matmul(seenOut.transpose(-2, -1)));      // [B,H,n,L,Dk]
            Blocks(dv, segment).add_(keyDecay * kb.matmul(seenOut));                        // [B,H,n,L,Dv]
        }
        return (dq, dk, dv);
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
        var queryDecay = Powers(lambda, arange(1, q.shape[2] + 1, dtype: q.dtype, device: q.device), blocked: false);
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
        var local = arange(c, dtype: k.dtype, device: k.device);
        var queryDecay = Powers(lambda, local + 1, blocked: false);                          // [1,H,C,1]
        var keyDecay = Powers(lambda, (c - 1) - local, blocked: false);
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
    /// or query-side w_i = lambda^(i'+1) (backward states), and each block's transition gamma_b = lambda^L [1,H,nb,1,1].
    /// </summary>
    static (Tensor Summaries, Tensor Gammas) BlockSummaries(Tensor a, Tensor b, double[] lambda, int blockSize, bool keySide,
                                                            Tensor? segments)
    {
        var summaries = new List<Tensor>();
        var gammas = new List<Tensor>();
        foreach (var segment in Segments(a, blockSize))
        {
            var local = Local(segment, a);
            var weights = keySide ? Enters(Powers(lambda, segment.Length - 1 - local, blocked: true), segment, segments) // [1,H,n|1,L,1]
                                  : Reads(Powers(lambda, local + 1, blocked: true), segment, segments);
            summaries.Add((weights * Blocks(a, segment)).transpose(-2, -1).matmul(Blocks(b, segment)));
            var gamma = Masks.DecayPower(lambda, segment.Length, a.dtype, a.device).unsqueeze(2)
                             .expand(1, lambda.Length, segment.Count, 1, 1);                 // [1,H,n,1,1]
            if (segments is not null)
            {
                // gamma_b = 0 for a block holding a document start: its state starts from zero
                var (blocked, entering) = SegmentBlocks(segments, segment);
                gamma = gamma * (blocked.select(1, segment.Length - 1) == entering.squeeze(1)).to(a.dtype).view(1, 1, -1, 1, 1);
            }
            gammas.Add(gamma);
        }
        return (cat(summaries, 2), cat(gammas, 2));
    }

    /// <summary>seg(i - 1) for every token i (0 for the first): the segment of the state entering at i. int64 [C]</summary>
    static Tensor Previous(Tensor segments) =>
        segments.shape[0] == 1 ? zeros_like(segments) : cat([zeros_like(segments.narrow(0, 0, 1)), segments.narrow(0, 0, segments.shape[0] - 1)]);

    /// <summary>The segment's blocks' seg [n,L] and the seg of the state entering each block [n,1].</summary>
    static (Tensor Blocked, Tensor Entering) SegmentBlocks(Tensor segments, Segment segment)
    {
        long count = segment.Count * segment.Length;
        var blocked = segments.narrow(0, segment.Start, count).view(segment.Count, segment.Length);              // [n,L]
        var entering = Previous(segments).narrow(0, segment.Start, count).view(segment.Count, segment.Length).narrow(1, 0, 1); // [n,1]
        return (blocked, entering);
    }

    /// <summary>Query-side weights [1,H,1,L,1] zeroed where q_i cannot read its block's entering state: [1,H,n,L,1].</summary>
    static Tensor Reads(Tensor weights, Segment segment, Tensor? segments)
    {
        if (segments is null) return weights;
        var (blocked, entering) = SegmentBlocks(segments, segment);
        return weights * (blocked == entering).to(weights.dtype).view(1, 1, segment.Count, segment.Length, 1);
    }

    /// <summary>Key-side weights [1,H,1,L,1] zeroed where k_j cannot reach its block's leaving state: [1,H,n,L,1].</summary>
    static Tensor Enters(Tensor weights, Segment segment, Tensor? segments)
    {
        if (segments is null) return weights;
        var (blocked, _) = SegmentBlocks(segments, segment);
        var last = blocked.narrow(1, segment.Length - 1, 1);                                 // [n,1]
        return weights * (blocked == last).to(weights.dtype).view(1, 1, segment.Count, segment.Length, 1);
    }

    /// <summary>Count blocks of Length tokens starting at Start: the full blocks, then the shorter tail.</summary>
    readonly record struct Segment(long Start, long Count, long Length);

    /// <summary>
    /// Full blocks are batched in groups of at most ~2^20 elements per temporary ([B,H,n,L,L], [B,H,n,L,D],
    /// [B,H,n,D,D]): that bounds the working memory and keeps the allocations below the allocator's mmap
    /// threshold, so they are reused instead of page-faulted in again (at N = 64K one [B,H,nb,L,L] batch was
    /// 128 MiB and half the CPU time went to the kernel zeroing fresh pages). The grouping does not change
    /// which block sees what; block indices stay global.
    /// </summary>
    static IEnumerable<Segment> Segments(Tensor like, long blockSize)
    {
        long n = like.shape[2], dim = like.shape[3];
        long perBlock = like.shape[0] * like.shape[1] * Math.Max(blockSize * blockSize, Math.Max(blockSize, dim) * dim);
        long group = Math.Max(1, (1L << 20) / perBlock);
        long full = n / blockSize;
        for (long first = 0; first < full; first += group)
            yield return new Segment(first * blockSize, Math.Min(group, full - first), blockSize);
        if (n % blockSize != 0) yield return new Segment(full * blockSize, 1, n % blockSize);
    }

    /// <summary>[B,H,N,D] -> the segment's blocks [B,H,Count,Length,D].</summary>
    static Tensor Blocks(Tensor x, Segment segment) =>
        x.narrow(2, segment.Start, segment.Count * segment.Length)
         .reshape(x.shape[0], x.shape[1], segment.Count, segment.Length, x.shape[3]);

    static Tensor Local(Segment segment, Tensor like) => arange(segment.Length, dtype: like.dtype, device: like.device);

    /// <summary>
    /// D_L [1,H,1,L,L]: lambda^(i-j) on and below the diagonal (a token sees itself), 0 above; with documents also 0
    /// between tokens of different documents, per block [1,H,n,L,L].
    /// </summary>
    static Tensor DecayMask(double[] lambda, Segment segment, Tensor like, Tensor? segments)
    {
        var mask = Masks.Decay(segment.Length, lambda, like.dtype, like.device).unsqueeze(1).unsqueeze(0);
        if (segments is null) return mask;
        var (blocked, _) = SegmentBlocks(segments, segment);
        var same = blocked.unsqueeze(-1) == blocked.unsqueeze(-2);                         // [n,L,L] seg(i) = seg(j)
        return mask * same.to(like.dtype).unsqueeze(0).unsqueeze(0);                        // [1,H,n,L,L]
    }

    /// <summary>lambda_h^e per exponent e: [1,H,1,L,1] (blocked) or [1,H,L,1].</summary>
    static Tensor Powers(double[] lambda, Tensor exponents, bool blocked)
    {
        var powers = Masks.DecayPowers(lambda, exponents).unsqueeze(-1);                    // [1,H,L,1]
        return blocked ? powers.unsqueeze(2) : powers;
    }
}
