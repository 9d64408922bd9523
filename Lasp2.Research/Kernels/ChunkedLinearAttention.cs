using Lasp2.Reference;
using Lasp2.Research.Attention;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Kernels;

/// <summary>
/// The local chunked linear-attention kernel: forward and hand-written backward for one shard
/// q, k [B,H,C,Dk], v [B,H,C,Dv] with a per-head decay lambda in (0, 1], an optional initial state S_0
/// [B,H,Dk,Dv] (the prefix supplied by communication) and the state after the shard as a result.
/// Blocked: the shard is cut into blocks of <c>blockSize</c> tokens (the last one may be shorter); all
/// full blocks are processed together as [B,H,nb,L,.] batches, so the largest temporary is [B,H,nb,L,L]
/// (never C x C). With W = 1 and no initial state this is plain single-device chunked linear attention.
///
/// Causal, local index i in the shard, block b with in-block index i' and length L (algorithms.md, form 4):
///   s_b = sum_j lambda^(L-1-j) k_j^T v_j,  S_b = lambda^L S_{b-1} + s_b (S_{-1} = S_0; the StatePrefix fold)
///   o_i = lambda^(i'+1) q_i S_{b-1} + sum_{j&lt;=i in b} lambda^(i-j) (q_i . k_j) v_j
/// Unmasked (lambda = 1): o_i = q_i (S_0 + K^T V).
/// The split into phases (<see cref="ForwardStates"/> -> <see cref="IntraOutput"/>, <see cref="BackwardStates"/> ->
/// <see cref="IntraGradients"/>, plus the S_0 terms) lets LASP-2 start its AllGather between them.
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
                                                        bool causal = true, Tensor? initialState = null)
    {
        var lambda = Check(q, k, v, decay, blockSize, causal);
        using var scope = NewDisposeScope();
        var states = ForwardStates(k, v, lambda, blockSize, causal);
        var output = IntraOutput(q, k, v, states, lambda, blockSize);
        var state = states.Total;
        if (initialState is not null)
        {
            output = output + InitialStateOutput(q, initialState, lambda);                   // [B,H,C,Dv]
            state = state + Masks.DecayPower(lambda, q.shape[2], q.dtype, q.device) * initialState;
        }
        return (output.MoveToOuterDisposeScope(), state.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Hand-written backward of <see cref="Forward"/> for output gradient dO [B,H,C,Dv] and final-state
    /// gradient dState (null = 0). Returns dQ, dK, dV and the gradient of the initial state.
    /// </summary>
    public static (Tensor DQ, Tensor DK, Tensor DV, Tensor DInitialState) Backward(
        Tensor q, Tensor k, Tensor v, Tensor dO, double[]? decay, int blockSize, bool causal = true,
        Tensor? initialState = null, Tensor? dState = null)
    {
        var lambda = Check(q, k, v, decay, blockSize, causal);
        using var scope = NewDisposeScope();
        var forward = ForwardStates(k, v, lambda, blockSize, causal);
        var backward = BackwardStates(q, dO, lambda, blockSize, causal);
        var (dq, dk, dv) = IntraGradients(q, k, v, dO, forward, backward, lambda, blockSize);
        var dInitial = backward.Total;
        if (initialState is not null || dState is not null)
        {
            var zero = zeros_like(backward.Total);
            var (dqState, dkState, dvState) = InitialStateGradients(k, v, dO, initialState ?? zero, dState ?? zero, lambda);
            (dq, dk, dv) = (dq + dqState, dk + dkState, dv + dvState);
            dInitial = dInitial + Masks.DecayPower(lambda, q.shape[2], q.dtype, q.device) * (dState ?? zero);
        }
        return (dq.MoveToOuterDisposeScope(), dk.MoveToOuterDisposeScope(), dv.MoveToOuterDisposeScope(), dInitial.MoveToOuterDisposeScope());
    }

    /// <summary>Forward phase 1: block summaries folded into the state entering each block; Total = m.</summary>
    public static BlockStates ForwardStates(Tensor k, Tensor v, double[] lambda, int blockSize, bool causal)
    {
        // Alg. 2 l.1 (unmasked, Alg. 1): M_t = K_t^T V_t
        if (!causal) return new BlockStates(null, k.transpose(-2, -1).matmul(v));            // [B,H,Dk,Dv]
        using var scope = NewDisposeScope();
        // s_b = sum_j lambda^(L-1-j) k_j^T v_j;  S_b = lambda^L S_{b-1} + s_b: entering states and the summary m
        var (summaries, gammas) = BlockSummaries(k, v, lambda, blockSize, keySide: true);
        var (prefixes, total) = StatePrefix.Exclusive(summaries, gammas, dim: 2);
        return new BlockStates(prefixes.MoveToOuterDisposeScope(), total.MoveToOuterDisposeScope());
    }

    /// <summary>Forward phase 2: the output of the shard from a zero initial state [B,H,C,Dv].</summary>
    public static Tensor IntraOutput(Tensor q, Tensor k, Tensor v, BlockStates states, double[] lambda, int blockSize)
    {
        if (states.Blocks is null) return q.matmul(states.Total);                            // Alg. 1: O = Q M
        using var scope = NewDisposeScope();
        var outputs = new List<Tensor>();
        long block = 0;
        foreach (var segment in Segments(q.shape[2], blockSize))
        {
            var (qb, kb, vb) = (Blocks(q, segment), Blocks(k, segment), Blocks(v, segment)); // [B,H,n,L,.]
            var queryDecay = Powers(lambda, Local(segment, q) + 1, blocked: true);           // lambda^(i'+1) [1,H,1,L,1]
            var entering = states.Blocks.narrow(2, block, segment.Count);                    // S_{b-1} [B,H,n,Dk,Dv]
            // inter-block: lambda^(i'+1) q_i S_{b-1};  intra-block: (Q_b K_b^T (.) D_L) V_b, diagonal masked
            var inter = (queryDecay * qb).matmul(entering);
            var intra = (qb.matmul(kb.transpose(-2, -1)) * DecayMask(lambda, segment, q)).matmul(vb);
            outputs.Add((inter + intra).flatten(2, 3));                                      // [B,H,n*L,Dv]
            block += segment.Count;
        }
        return cat(outputs, 2).MoveToOuterDisposeScope();
    }

    /// <summary>The initial state's contribution lambda^(i+1) q_i S_0 [B,H,C,Dv] (Alg. 2 l.9: Q_t P_t).</summary>
    public static Tensor InitialStateOutput(Tensor q, Tensor initialState, double[] lambda)
    {
        using var scope = NewDisposeScope();
        var queryDecay = Powers(lambda, arange(1, q.shape[2] + 1, dtype: q.dtype, device: q.device), blocked: false);
        return (queryDecay * q).matmul(initialState).MoveToOuterDisposeScope();             // [B,H,C,Dv]
    }

    /// <summary>
    /// Backward phase 1: per-block q-side summaries d_b = sum_i lambda^(i'+1) q_i^T do_i folded into the
    /// gradient leaving each block from later blocks; Total = dm = sum_i lambda^(i+1) q_i^T do_i.
    /// </summary>
    public static BlockStates BackwardStates(Tensor q, Tensor dO, double[] lambda, int blockSize, bool causal)
    {
        // Alg. 3 l.1 / Alg. 4 l.1: dM_t = Q_t^T dO_t
        if (!causal) return new BlockStates(null, q.transpose(-2, -1).matmul(dO));           // [B,H,Dk,Dv]
        using var scope = NewDisposeScope();
        // d_b = sum_i lambda^(i'+1) q_i^T do_i;  dS_{b-1} = lambda^L dS_b + d_b: leaving gradients and dm
        var (summaries, gammas) = BlockSummaries(q, dO, lambda, blockSize, keySide: false);
        var (suffixes, total) = StatePrefix.ExclusiveSuffix(summaries, gammas, dim: 2);
        return new BlockStates(suffixes.MoveToOuterDisposeScope(), total.MoveToOuterDisposeScope());
    }

    /// <summary>Backward phase 2: dQ, dK, dV of the shard with zero initial state and zero dState.</summary>
    public static (Tensor DQ, Tensor DK, Tensor DV) IntraGradients(Tensor q, Tensor k, Tensor v, Tensor dO,
        BlockStates forward, BlockStates backward, double[] lambda, int blockSize)
    {
        using var scope = NewDisposeScope();
        if (forward.Blocks is null || backward.Blocks is null)
        {
            // Alg. 3 (local part): dQ = dO M^T, dK = V dM^T, dV = K dM
            return (dO.matmul(forward.Total.transpose(-2, -1)).MoveToOuterDisposeScope(),
                    v.matmul(backward.Total.transpose(-2, -1)).MoveToOuterDisposeScope(),
                    k.matmul(backward.Total).MoveToOuterDisposeScope());
        }
        var (dqs, dks, dvs) = (new List<Tensor>(), new List<Tensor>(), new List<Tensor>());
        long block = 0;
        foreach (var segment in Segments(q.shape[2], blockSize))
        {
            var (qb, kb, vb, dOb) = (Blocks(q, segment), Blocks(k, segment), Blocks(v, segment), Blocks(dO, segment));
            var local = Local(segment, q);
            var queryDecay = Powers(lambda, local + 1, blocked: true);                       // [1,H,1,L,1]
            var keyDecay = Powers(lambda, segment.Length - 1 - local, blocked: true);
            var mask = DecayMask(lambda, segment, q);                                        // [1,H,1,L,L]
            var entering = forward.Blocks.narrow(2, block, segment.Count);                   // S_{b-1}
            var leaving = backward.Blocks.narrow(2, block, segment.Count);                   // dS_b from later blocks
            // Alg. 4 l.3-5 inside the shard, with A = Q K^T (.) D and dA = dO V^T (.) D
            var scores = qb.matmul(kb.transpose(-2, -1)) * mask;                             // [B,H,n,L,L]
            var dScores = dOb.matmul(vb.transpose(-2, -1)) * mask;
            dqs.Add((queryDecay * dOb.matmul(entering.transpose(-2, -1)) + dScores.matmul(kb)).flatten(2, 3));
            dks.Add((dScores.transpose(-2, -1).matmul(qb) + keyDecay * vb.matmul(leaving.transpose(-2, -1))).flatten(2, 3));
            dvs.Add((scores.transpose(-2, -1).matmul(dOb) + keyDecay * kb.matmul(leaving)).flatten(2, 3));
            block += segment.Count;
        }
        return (cat(dqs, 2).MoveToOuterDisposeScope(), cat(dks, 2).MoveToOuterDisposeScope(), cat(dvs, 2).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Gradients through the initial state S_0 (prefix P) and from the final-state gradient G (suffix):
    /// dq_i = lambda^(i+1) do_i P^T, dk_j = lambda^(C-1-j) v_j G^T, dv_j = lambda^(C-1-j) k_j G (Alg. 4 l.9-11).
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
    public static double[] Check(Tensor q, Tensor k, Tensor v, double[]? decay, int blockSize, bool causal)
    {
        var lambda = Guards.LinearAttentionInputs(q, k, v, causal, decay);
        Guards.AtLeast(q.shape[2], 1, "sequence length of q (dimension 2)");
        Guards.AtLeast(blockSize, 1, nameof(blockSize));
        return lambda;
    }

    /// <summary>
    /// Per-block sum_j w_j a_j^T b_j [B,H,nb,Da,Db] with key-side weights w_j = lambda^(L-1-j) (forward states)
    /// or query-side w_i = lambda^(i'+1) (backward states), and each block's transition gamma_b = lambda^L [1,H,nb,1,1].
    /// </summary>
    static (Tensor Summaries, Tensor Gammas) BlockSummaries(Tensor a, Tensor b, double[] lambda, int blockSize, bool keySide)
    {
        var summaries = new List<Tensor>();
        var gammas = new List<Tensor>();
        foreach (var segment in Segments(a.shape[2], blockSize))
        {
            var local = Local(segment, a);
            var weights = Powers(lambda, keySide ? segment.Length - 1 - local : local + 1, blocked: true); // [1,H,1,L,1]
            summaries.Add((weights * Blocks(a, segment)).transpose(-2, -1).matmul(Blocks(b, segment)));
            gammas.Add(Masks.DecayPower(lambda, segment.Length, a.dtype, a.device).unsqueeze(2)
                            .expand(1, lambda.Length, segment.Count, 1, 1));
        }
        return (cat(summaries, 2), cat(gammas, 2));
    }

    /// <summary>Count blocks of Length tokens starting at Start: the full blocks, then the shorter tail.</summary>
    readonly record struct Segment(long Start, long Count, long Length);

    static IEnumerable<Segment> Segments(long n, long blockSize)
    {
        long full = n / blockSize;
        if (full > 0) yield return new Segment(0, full, blockSize);
        if (n % blockSize != 0) yield return new Segment(full * blockSize, 1, n % blockSize);
    }

    /// <summary>[B,H,N,D] -> the segment's blocks [B,H,Count,Length,D].</summary>
    static Tensor Blocks(Tensor x, Segment segment) =>
        x.narrow(2, segment.Start, segment.Count * segment.Length)
         .reshape(x.shape[0], x.shape[1], segment.Count, segment.Length, x.shape[3]);

    static Tensor Local(Segment segment, Tensor like) => arange(segment.Length, dtype: like.dtype, device: like.device);

    /// <summary>D_L [1,H,1,L,L]: lambda^(i-j) on and below the diagonal (a token sees itself), 0 above.</summary>
    static Tensor DecayMask(double[] lambda, Segment segment, Tensor like) =>
        Masks.Decay(segment.Length, lambda, like.dtype, like.device).unsqueeze(1).unsqueeze(0);

    /// <summary>lambda_h^e per exponent e: [1,H,1,L,1] (blocked) or [1,H,L,1].</summary>
    static Tensor Powers(double[] lambda, Tensor exponents, bool blocked)
    {
        var logDecay = tensor(lambda, dtype: exponents.dtype, device: exponents.device).log();
        return blocked
            ? (exponents.view(1, 1, 1, -1, 1) * logDecay.view(1, -1, 1, 1, 1)).exp()
            : (exponents.view(1, 1, -1, 1) * logDecay.view(1, -1, 1, 1)).exp();
    }
}
