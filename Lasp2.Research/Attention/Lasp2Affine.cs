using Lasp2.Reference;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// LASP-2 on affine summaries: every recurrence S_t = A_t S_{t-1} + B_t (<see cref="Recurrence"/>: decay,
/// scalar-gate, gla, delta, gated-delta) across ranks with one AllGather per direction. Steps as in
/// <see cref="AffineSummaries"/>; the passing (steps 2 and 5) is:
/// <code>
/// forward:  AllGather (A_p, B_p) of every piece; in global piece order u = 0, 1, ...:
///           P_0 = 0,  P_{u+1} = A_u P_u + B_u                       (each rank folds all pieces)
/// backward: AllGather D_p = dL/dP_p;  G_last = 0,  G_{u-1} = A_u^T G_u + D_u
/// </code>
/// A is one number per head (decay, scalar-gate), a Dk-vector (gla) or a Dk x Dk matrix (delta, gated-delta)
/// per batch element and head; it is sent dense (docs/algorithms.md says when the WY factors would be smaller).
/// The constant decay keeps its fast path in <see cref="Lasp2Attention"/> ("lasp2"); this method runs it through
/// the general engine. Causal only.
/// </summary>
public sealed class Lasp2Affine : ISequenceParallelAttention
{
    /// <inheritdoc/>
    public string Name => "lasp2-affine";

    /// <inheritdoc/>
    public MethodCapabilities Supports { get; } =
        new(AttentionKind.Linear, Causal: true, Unmasked: false, Decay: true, [Layout.Contiguous, Layout.Zigzag], GroupedKv: false);

    /// <inheritdoc/>
    public FlopAlgorithm Flops => FlopAlgorithm.ChunkedLinear;

    /// <inheritdoc/>
    public IReadOnlyList<Recurrence> Recurrences => Recurrence.All;

    /// <inheritdoc/>
    public Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options) =>
        AffineSummaries.Forward(this, group, q, k, v, options, recurrence => new Gathered(group, recurrence, options.Layout));

    /// <summary>
    /// Per rank: forward one AllGather of P pieces' (A, B): (W-1) P (a + S) each way, a = B H (1 | Dk | Dk^2) e the
    /// transition of <see cref="CommShape.Recurrence"/>, S = B H Dk Dv e the state; backward one AllGather of P
    /// states: (W-1) P S. One step each.
    /// </summary>
    public CommPrediction PredictComm(CommShape shape, int rank)
    {
        long w = shape.WorldSize, pieces = SequenceLayout.PiecesPerRank(shape.Layout);
        long transition = (long)shape.Batch * shape.Heads * shape.RecurrenceOrDecay.TransitionElements(shape.DimK) * shape.ElementSize;
        long forward = (w - 1) * pieces * (transition + shape.StateBytes);
        long backward = (w - 1) * pieces * shape.StateBytes;
        return new(Name, rank, DirectionPrediction.Of(1, (CommKind.AllGather, 1, forward, forward)),
                               DirectionPrediction.Of(1, (CommKind.AllGather, 1, backward, backward)));
    }

    /// <summary>The AllGather-and-fold passing; keeps every piece's transition (sequence order) for backward.</summary>
    sealed class Gathered(IProcessGroup group, Recurrence recurrence, Layout layout) : StatePassing
    {
        public override (Tensor[] Entering, Tensor[] Kept) Entering(Tensor[] transitions, Tensor[] states)
        {
            using var scope = NewDisposeScope();
            long transitionSize = transitions[0].numel();
            var packet = stack(transitions.Zip(states, (a, b) => cat([a.flatten(), b.flatten()])).ToList()); // [P, a + s]
            var ordered = SequenceLayout.ToSequenceOrder(group.AllGather(packet), layout);      // [W*P, a + s]
            long count = ordered.shape[0];
            var allTransitions = ordered.narrow(1, 0, transitionSize).reshape([count, .. transitions[0].shape]);
            var allStates = ordered.narrow(1, transitionSize, states[0].numel()).reshape([count, .. states[0].shape]);
            // P_0 = 0, P_{u+1} = A_u P_u + B_u, in global piece order
            var prefixes = new Tensor[count];
            prefixes[0] = zeros_like(allStates[0]);
            for (long u = 0; u + 1 < count; u++)
                prefixes[u + 1] = recurrence.Apply(allTransitions[u], prefixes[u]).Plus(allStates[u]);
            var entering = SequenceLayout.RankPieces(stack(prefixes), group.Rank, group.WorldSize, layout).unbind(0)
                                      .Select(p => p.MoveToOuterDisposeScope()).ToArray();
            return (entering, [allTransitions.MoveToOuterDisposeScope()]);                   // [W*P, ...A]
        }

        public override Tensor[] Leaving(Tensor[] enteringGradients, Tensor[] kept)
        {
            var all = kept[0];                                                                // [W*P, ...A]
            using var scope = NewDisposeScope();
            var ordered = SequenceLayout.ToSequenceOrder(group.AllGather(stack(enteringGradients)), layout); // [W*P,B,H,Dk,Dv]
            long count = ordered.shape[0];
            // G_last = 0, G_{u-1} = A_u^T G_u + D_u
            var suffixes = new Tensor[count];
            suffixes[count - 1] = zeros_like(ordered[0]);
            for (long u = count - 1; u > 0; u--)
                suffixes[u - 1] = recurrence.ApplyTransposed(all[u], suffixes[u]).Plus(ordered[u]);
            return SequenceLayout.RankPieces(stack(suffixes), group.Rank, group.WorldSize, layout).unbind(0)
                              .Select(g => g.MoveToOuterDisposeScope()).ToArray();
        }
    }
}
