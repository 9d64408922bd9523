using System.Diagnostics;
using Lasp2.Reference;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;
using Kernel = Lasp2.Research.Kernels.ChunkedLinearAttention;

namespace Lasp2.Research.Attention;

/// <summary>
/// LASP-2 for linear attention layers (Sun et al., arXiv 2502.07563): Alg. 1 (forward, no mask),
/// Alg. 2 (forward, causal), Alg. 3 (backward, no mask), Alg. 4 (backward, causal), plus the scalar
/// per-head decay derived in algorithms.md and the zigzag layout. "Alg. 2 step 3" in the comments refers to
/// the numbered steps of the restatement in docs/algorithms.md ("LASP-2 with causal mask").
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
/// </summary>
public sealed class Lasp2Attention : ISequenceParallelAttention, IOverlapReporting
{
    /// <inheritdoc/>
    public string Name => "lasp2";

    /// <inheritdoc/>
    public MethodCapabilities Supports { get; } =
        new(AttentionKind.Linear, Causal: true, Unmasked: true, Decay: true, [Layout.Contiguous, Layout.Zigzag], GroupedKv: false);

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
        return Lasp2Function.apply(q, k, v, new Lasp2Call(group, options, lambda, Overlap));
    }
}

/// <summary>What one LASP-2 layer call needs beside its tensors.</summary>
sealed record Lasp2Call(IProcessGroup Group, AttentionOptions Options, double[] Lambda, OverlapLog Overlap)
{
    public int PiecesPerRank => SequenceLayout.PiecesPerRank(Options.Layout);

    /// <summary>This rank's pieces of a local tensor [B,H,C,.]: one (contiguous) or two halves (zigzag).</summary>
    public Tensor[] Pieces(Tensor x) =>
        PiecesPerRank == 1 ? [x] : [x.narrow(2, 0, x.shape[2] / 2), x.narrow(2, x.shape[2] / 2, x.shape[2] / 2)];

    /// <summary>The inverse of <see cref="Pieces"/>: one piece is returned as is (no copy), two are concatenated.</summary>
    public static Tensor Join(IList<Tensor> pieces) => pieces.Count == 1 ? pieces[0] : cat(pieces, 2);

    /// <summary>
    /// From every rank's pieces [W,P,B,H,Dk,Dv] and decays [W,P,1,H,1,1], this rank's folded state per piece
    /// [P,B,H,Dk,Dv]: causal forward, the exclusive prefix P; causal backward, the exclusive suffix G; unmasked,
    /// both (the sum over every other piece). The fold runs in global piece order (the zigzag rule).
    /// </summary>
    public Tensor Fold(Tensor gathered, Tensor gammas, bool backward)
    {
        var (layout, rank, worldSize) = (Options.Layout, Group.Rank, Group.WorldSize);
        var ordered = StatePrefix.ToSequenceOrder(gathered, layout);                        // [W*P,B,H,Dk,Dv]
        var orderedGammas = StatePrefix.ToSequenceOrder(gammas, layout);                    // [W*P,1,H,1,1]
        Tensor Before() => StatePrefix.Exclusive(ordered, orderedGammas, dim: 0).Prefixes;
        Tensor After() => StatePrefix.ExclusiveSuffix(ordered, orderedGammas, dim: 0).Suffixes;
        var folded = !Options.Causal ? Before() + After() : backward ? After() : Before();
        return StatePrefix.RankPieces(folded, rank, worldSize, layout);
    }

    /// <summary>
    /// Waits for an AllGather issued when <paramref name="watch"/> started and records the overlap: compute =
    /// the time since the issue, wait = the time blocked in Wait as the group's accounting records it.
    /// </summary>
    public Tensor Wait(ICommHandle handle, Stopwatch watch, string direction)
    {
        var compute = watch.Elapsed;
        var waitedBefore = Group.Stats[CommKind.AllGather].Wait;
        var gathered = handle.Wait();
        Overlap.Record(direction, compute, Group.Stats[CommKind.AllGather].Wait - waitedBefore);
        return gathered;
    }
}

/// <summary>LASP-2 forward (Alg. 1/2) and hand-written backward (Alg. 3/4) for one rank.</summary>
sealed class Lasp2Function : autograd.SingleTensorFunction<Lasp2Function>
{
    public override string Name => nameof(Lasp2Function);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (q, k, v, call) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Lasp2Call)vars[3]);
        var (lambda, block, causal) = (call.Lambda, call.Options.BlockSize, call.Options.Causal);
        using var scope = NewDisposeScope();
        var (qs, ks, vs) = (call.Pieces(q), call.Pieces(k), call.Pieces(v));
        int pieces = qs.Length;
        // Alg. 2 step 1: M_t = K_t^T V_t, here per piece m_p = sum_i lambda^(C_p-1-i) k_i^T v_i (with the block states)
        var states = Enumerable.Range(0, pieces).Select(p => Kernel.ForwardStates(ks[p], vs[p], lambda, block, causal)).ToArray();
        var packet = stack(Enumerable.Range(0, pieces).Select(p => cat([
            states[p].Total.flatten(),                                                       // m_p
            Masks.DecayPower(lambda, qs[p].shape[2], q.dtype, q.device).flatten()]))        // gamma_p = lambda^(C_p) [H]
            .ToList());                                                                      // [P, B*H*Dk*Dv + H]
        var watch = Stopwatch.StartNew();
        // Alg. 2 step 1: start the AllGather of [M_t]_1^W asynchronously
        var handle = call.Group.AllGatherAsync(packet);
        // Alg. 2 step 2, while it is in flight: the part of O_intra = [(Q_t K_t^T) (.) Psi] V_t that needs no state:
        // the diagonal blocks (masked inside; unmasked: Q_t M_t)
        var diagonal = Enumerable.Range(0, pieces).Select(p => Kernel.DiagonalOutput(qs[p], ks[p], vs[p], states[p], lambda, block)).ToArray();
        var gathered = call.Wait(handle, watch, "forward");                                 // [W, P, B*H*Dk*Dv + H]
        long stateSize = states[0].Total.numel();
        long[] stateShape = [gathered.shape[0], pieces, .. states[0].Total.shape];
        var allStates = gathered.narrow(2, 0, stateSize).reshape(stateShape);               // [W,P,B,H,Dk,Dv]
        var allGammas = gathered.narrow(2, stateSize, lambda.Length)
                                .reshape(gathered.shape[0], pieces, 1, lambda.Length, 1, 1); // [W,P,1,H,1,1]
        // Alg. 2 step 3: P_t = sum_{u<t} M_u (decayed, per piece in global order; unmasked: every other piece)
        var prefixes = call.Fold(allStates, allGammas, backward: false);                    // [P,B,H,Dk,Dv]
        // Each block b of piece p sees S_{b-1} + lambda^(start_b) P_p (unmasked: P_p)
        var seen = Enumerable.Range(0, pieces)
            .Select(p => Kernel.StatesSeen(states[p], prefixes[p], lambda, block, qs[p], fromStart: true, reuseLocal: true)).ToArray();
        // Alg. 2 step 4: O_t = O_intra + Q_t P_t, the inter-block terms of O_intra fused with Q_t P_t
        var output = Lasp2Call.Join(Enumerable.Range(0, pieces)
            .Select(p => Kernel.StateOutput(qs[p], seen[p], lambda, block, addTo: diagonal[p])).ToList()); // [B,H,C,Dv]

        // Alg. 2 step 4: cache P_t (inside the states seen), the summaries and the gammas for backward
        var saved = new List<Tensor> { q, k, v, allGammas.contiguous() };
        for (int p = 0; p < pieces; p++) saved.AddRange([states[p].Total, seen[p]]);
        foreach (var tensor in saved.Skip(3)) tensor.MoveToOuterDisposeScope();           // saved after forward returns
        ctx.save_for_backward(saved);
        ctx.save_data("call", call);
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor dO)
    {
        var call = (Lasp2Call)ctx.get_data("call");
        var (lambda, block, causal) = (call.Lambda, call.Options.BlockSize, call.Options.Causal);
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        var (q, k, v, gammas) = (saved[0], saved[1], saved[2], saved[3]);
        var (qs, ks, vs, dOs) = (call.Pieces(q), call.Pieces(k), call.Pieces(v), call.Pieces(dO));
        int pieces = qs.Length;
        var (summaries, seen) = (Enumerable.Range(0, pieces).Select(p => saved[4 + 2 * p]).ToArray(),
                                 Enumerable.Range(0, pieces).Select(p => saved[5 + 2 * p]).ToArray());
        // Alg. 4 step 1: dM_t = Q_t^T dO_t, per piece dm_p = sum_i lambda^(i+1) q_i^T do_i (with the block gradients)
        var backwardStates = Enumerable.Range(0, pieces).Select(p => Kernel.BackwardStates(qs[p], dOs[p], lambda, block, causal)).ToArray();
        var watch = Stopwatch.StartNew();
        // Alg. 4 step 1: start the AllGather of [dM_t]_1^W asynchronously
        var handle = call.Group.AllGatherAsync(stack(backwardStates.Select(s => s.Total).ToList())); // [P,B,H,Dk,Dv]
        // Alg. 4 step 2, while it is in flight: the intra gradients that need no state (A = Q K^T (.) Psi,
        // dA = dO V^T (.) Psi on the diagonal blocks: dQ = dA K, dK = dA^T Q, dV = A^T dO)
        var diagonal = Enumerable.Range(0, pieces)
            .Select(p => Kernel.DiagonalGradients(qs[p], ks[p], vs[p], dOs[p], summaries[p], backwardStates[p], lambda, block)).ToArray();
        var gathered = call.Wait(handle, watch, "backward");                                // [W,P,B,H,Dk,Dv]
        // Alg. 4 step 3: G_t = sum_{u>t} dM_u (decayed, per piece in global order; unmasked: every other piece)
        var suffixes = call.Fold(gathered, gammas, backward: true);                          // [P,B,H,Dk,Dv]
        for (int p = 0; p < pieces; p++)
        {
            // Each block b leaves dS_b + lambda^(C_p-end_b) G_p (unmasked: G_p)
            var leaving = Kernel.StatesSeen(backwardStates[p], suffixes[p], lambda, block, qs[p], fromStart: false, reuseLocal: true);
            // Alg. 4 step 4: dQ_t += dO_t P_t^T, dK_t += V_t G_t^T, dV_t += K_t G_t, fused with the inter-block terms
            // (added in place into the diagonal gradients)
            Kernel.StateGradients(ks[p], vs[p], dOs[p], seen[p], leaving, lambda, block, addTo: diagonal[p]);
        }
        return [Lasp2Call.Join(diagonal.Select(d => d.DQ).ToList()).MoveToOuterDisposeScope(),
                Lasp2Call.Join(diagonal.Select(d => d.DK).ToList()).MoveToOuterDisposeScope(),
                Lasp2Call.Join(diagonal.Select(d => d.DV).ToList()).MoveToOuterDisposeScope(), null!];
    }
}
