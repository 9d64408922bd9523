using Lasp2.Reference;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// How the pieces of a sequence-parallel affine-summary method learn about each other: forward, the state entering
/// each of this rank's pieces from the pieces' summaries (A, B); backward, the gradient leaving each piece (the
/// gradient of its S_out from every later piece) from each piece's gradient of its entering state.
/// </summary>
abstract class StatePassing
{
    /// <summary>
    /// P_p for each local piece [B,H,Dk,Dv], from each local piece's (A_p, B_p); and the transitions the backward
    /// needs (<paramref name="transitions"/> themselves, or every piece's), which the caller saves for it.
    /// </summary>
    public abstract (Tensor[] Entering, Tensor[] Kept) Entering(Tensor[] transitions, Tensor[] states);

    /// <summary>
    /// G_p = sum_{u&gt;p} (A_{u-1} ... A_{p+1})^T D_u for each local piece, from each local piece's D_p = dL/dP_p and
    /// what <see cref="Entering"/> kept.
    /// </summary>
    public abstract Tensor[] Leaving(Tensor[] enteringGradients, Tensor[] kept);
}

/// <summary>What one call of an affine-summary method needs beside its tensors.</summary>
sealed record AffineCall(Recurrence Recurrence, int BlockSize, Layout Layout, bool[] NeedsGrad, StatePassing Passing)
{
    /// <summary>Pieces per rank: 1 (contiguous) or 2 (zigzag).</summary>
    public int PiecesPerRank => SequenceLayout.PiecesPerRank(Layout);

    /// <summary>This rank's pieces of a local tensor [B,H,C,...], in local order.</summary>
    public Tensor[] Pieces(Tensor x) => SequenceLayout.LocalPieces(x, Layout);
}

/// <summary>
/// The engine shared by every method that passes affine summaries (docs/algorithms.md, "Gated recurrences on
/// affine summaries"). Each piece p (one per rank, two under zigzag) is the affine map S_out = A_p S_in + B_p.
/// Forward, step 1: (A_p, B_p) of each local piece; step 2: the state P_p entering it (the method's
/// <see cref="StatePassing"/>: all ranks' summaries folded in global piece order, or a chain); step 3: the
/// local chunked kernel from P_p gives o. Backward, step 4: the local backward of step 3 gives dq, dk, dv, dg,
/// dbeta through o and D_p = dL/dP_p; step 5: the gradient G_p leaving each piece (the method's passing, with the
/// transposed transitions); step 6: the summary's backward with dA_p = G_p P_p^T and dB_p = G_p adds the paths
/// through A_p and B_p. Autograd runs only inside a rank (steps 1, 3, 4, 6); what crosses ranks is hand-written.
/// </summary>
static class AffineSummaries
{
    /// <summary>
    /// Checks the call and runs it: the gates come from <see cref="AttentionOptions.Gates"/> (this rank's shard), or
    /// for the constant decay from <see cref="AttentionOptions.Decay"/>.
    /// </summary>
    public static Tensor Forward(ISequenceParallelAttention method, IProcessGroup group, Tensor q, Tensor k, Tensor v,
                                 AttentionOptions options, Func<Recurrence, StatePassing> passing)
    {
        var lambda = MethodChecks.Validate(method, group, q, k, v, options);
        if (options.Layout == Layout.Zigzag && q.shape[2] % 2 != 0)
            throw new ArgumentException(
                $"zigzag needs an even local length (two pieces per rank, N divisible by 2W); q has {q.shape[2]} tokens.", nameof(q));
        var gates = options.Gates ?? Gates.ConstantDecay(lambda, q.shape[0], q.shape[2], q.dtype, q.device);
        gates.Check(q);
        Tensor[] inputs = [q, k, v, .. gates.Tensors];
        var call = new AffineCall(gates.Recurrence, options.BlockSize, options.Layout,
                                  inputs.Select(t => t.requires_grad).ToArray(), passing(gates.Recurrence));
        return AffineFunction.apply([.. inputs, call]);
    }
}

/// <summary>Forward (steps 1-3) and hand-written backward (steps 4-6) of an affine-summary method on one rank.</summary>
sealed class AffineFunction : autograd.SingleTensorFunction<AffineFunction>
{
    public override string Name => nameof(AffineFunction);

    /// <summary>This piece's q, k, v and gates from the call's inputs (q, k, v, then the gate tensors).</summary>
    static (Tensor Q, Tensor K, Tensor V, Gates Gates) Piece(AffineCall call, IReadOnlyList<Tensor> inputs, int piece)
    {
        var parts = inputs.Select(x => call.Pieces(x)[piece]).ToArray();
        return (parts[0], parts[1], parts[2], Gates.Of(call.Recurrence, parts[3..]));
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var call = (AffineCall)vars[^1];
        var inputs = vars[..^1].Cast<Tensor>().ToArray();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var pieces = Enumerable.Range(0, call.PiecesPerRank).Select(p => Piece(call, inputs, p)).ToArray();
        // step 1: (A_p, B_p), the affine map of each local piece
        var summaries = pieces.Select(x => GatedLinearAttention.Summary(x.K, x.V, x.Gates, call.BlockSize)).ToArray();
        // step 2: P_p, the state entering each piece (crosses ranks)
        var (entering, kept) = call.Passing.Entering(summaries.Select(s => s.Transition).ToArray(), summaries.Select(s => s.State).ToArray());
        // step 3: o from P_p through the local chunked kernel
        var output = SequenceLayout.JoinLocalPieces(pieces.Select((x, p) =>
            GatedLinearAttention.Chunked(x.Q, x.K, x.V, x.Gates, call.BlockSize, entering[p]).Output).ToList()); // [B,H,C,Dv]
        foreach (var state in entering.Concat(kept)) state.MoveToOuterDisposeScope();     // saved after forward returns
        ctx.save_for_backward([.. inputs, .. entering, .. kept]);
        ctx.save_data("call", call);
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor dO)
    {
        var call = (AffineCall)ctx.get_data("call");
        var saved = ctx.get_saved_variables();
        int count = call.NeedsGrad.Length;
        var inputs = saved.Take(count).ToArray();
        var entering = saved.Skip(count).Take(call.PiecesPerRank).ToArray();
        var kept = saved.Skip(count + call.PiecesPerRank).ToArray();
        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        var dOs = call.Pieces(dO);
        var pieceGrads = new Tensor[call.PiecesPerRank][];
        var enteringGrads = new Tensor[call.PiecesPerRank];
        for (int p = 0; p < call.PiecesPerRank; p++)
        {
            // step 4: the local backward of o = f(q, k, v, gates, P_p): input gradients through o, and D_p = dL/dP_p
            var leaves = Leaves([.. inputs.Select(x => call.Pieces(x)[p]), entering[p]]);
            var (q, k, v) = (leaves[0], leaves[1], leaves[2]);
            var output = GatedLinearAttention.Chunked(q, k, v, Gates.Of(call.Recurrence, leaves[3..^1]), call.BlockSize, leaves[^1]).Output;
            var grads = Grads([output], leaves, [dOs[p]]);
            (pieceGrads[p], enteringGrads[p]) = (grads[..^1], grads[^1]);
        }
        // step 5: G_p, the gradient leaving each piece (crosses ranks)
        var leaving = call.Passing.Leaving(enteringGrads, kept);
        for (int p = 0; p < call.PiecesPerRank; p++)
        {
            // step 6: S_out = A_p P_p + B_p, so dA_p = G_p P_p^T (reduced to A's kind) and dB_p = G_p, through the summary
            var leaves = Leaves(inputs.Skip(1).Select(x => call.Pieces(x)[p]).ToArray());   // k, v, gates
            var (transition, state) = GatedLinearAttention.Summary(leaves[0], leaves[1], Gates.Of(call.Recurrence, leaves[2..]), call.BlockSize);
            var grads = Grads([transition, state], leaves,
                              [call.Recurrence.TransitionGradient(leaving[p], entering[p]), leaving[p]]);
            for (int i = 0; i < grads.Length; i++) pieceGrads[p][i + 1] = pieceGrads[p][i + 1].Plus(grads[i]);
        }
        var result = Enumerable.Range(0, count)
            .Select(i => call.NeedsGrad[i] ? SequenceLayout.JoinLocalPieces(pieceGrads.Select(g => g[i]).ToList()).MoveToOuterDisposeScope() : null!)
            .ToList();
        result.Add(null!);                                                                   // the call
        return result;
    }

    static Tensor[] Leaves(Tensor[] tensors) => tensors.Select(t => t.detach().requires_grad_(true)).ToArray();

    /// <summary>Gradients of the outputs' inner product with the cotangents, with respect to every leaf (zeros where unused).</summary>
    static Tensor[] Grads(Tensor[] outputs, Tensor[] leaves, Tensor[] cotangents)
    {
        var grads = autograd.grad(outputs, leaves, cotangents, allow_unused: true);
        return leaves.Select((leaf, i) => grads[i] is { } g && !g.IsInvalid ? g : zeros_like(leaf)).ToArray();
    }
}
