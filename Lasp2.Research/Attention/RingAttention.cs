using Lasp2.Reference;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// Ring Attention (Liu, Zaharia, Abbeel 2023; the LASP-2 paper's baseline). Rank r keeps its queries;
/// the K,V blocks travel around the ring, W - 1 SendRecv steps of one [B,Hkv,C,Dk+Dv] block, each
/// overlapped with the attention of the block in hand (<see cref="Ring.Visit"/>). Softmax blocks merge by
/// the log-sum-exp rule (<see cref="OnlineSoftmax"/>); linear attention is run as the paper ran it, a
/// blockwise left product (Q_r K_u^T (.) D) V_u with no right-product trick (<see cref="LeftProduct"/>).
/// Backward: the K,V blocks travel again, and each block's dK,dV accumulator travels behind it and comes
/// home after W - 1 hops (<see cref="Ring.VisitAccumulate"/>): 2 (W - 1) SendRecvs. Causal masks come from
/// global positions, so contiguous and zigzag layouts share the code; causal blocks that lie entirely in
/// a query block's future are skipped (zigzag balances what remains).
/// </summary>
public sealed class RingAttention(AttentionKind kind) : ISequenceParallelAttention
{
    public string Name => kind == AttentionKind.Softmax ? "ring-softmax" : "ring-linear";

    public MethodCapabilities Supports => BlockKernels.Capabilities(kind);

    public Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options)
    {
        var decay = MethodChecks.Validate(this, group, q, k, v, options);
        var kernel = BlockKernels.For(kind, options.Causal, q.shape[3], decay);
        return RingFunction.apply(group, kernel, options.Layout, q, k, v)[0];
    }

    /// <summary>O_r = merge over u of block(Q_r, K_u, V_u), the blocks arriving around the ring.</summary>
    static BlockOutput ForwardPass(IProcessGroup group, IBlockAttention kernel, Layout layout, Tensor q, Tensor k, Tensor v)
    {
        var positions = MethodChecks.AllPositions(q.shape[2], group.WorldSize, layout, q.device);
        BlockOutput? merged = null;
        Ring.Visit(group, cat([k, v], -1), (block, owner) =>                             // [B,Hkv,C,Dk+Dv]
        {
            var part = kernel.Forward(q, block.narrow(-1, 0, k.shape[3]), block.narrow(-1, k.shape[3], v.shape[3]),
                                      positions[group.Rank], positions[owner]);
            if (part is not null) merged = merged is null ? part : kernel.Merge(merged, part);
        });
        // The own block always contributes (a token sees itself), so merged is set.
        return merged!;
    }

    /// <summary>dQ_r = sum_u dQ(Q_r, K_u); dK_u, dV_u summed over every query rank on the travelling accumulator.</summary>
    static (Tensor DQ, Tensor DK, Tensor DV) BackwardPass(IProcessGroup group, IBlockAttention kernel, Layout layout,
        Tensor q, Tensor k, Tensor v, Tensor dO, BlockOutput final)
    {
        var positions = MethodChecks.AllPositions(q.shape[2], group.WorldSize, layout, q.device);
        var dQ = zeros_like(q);                                                          // [B,H,C,Dk]
        var dKV = Ring.VisitAccumulate(group, cat([k, v], -1), (block, owner) =>
        {
            var grads = kernel.Backward(q, block.narrow(-1, 0, k.shape[3]), block.narrow(-1, k.shape[3], v.shape[3]),
                                        positions[group.Rank], positions[owner], dO, final);
            dQ = dQ + grads.DQ;
            return cat([grads.DK, grads.DV], -1);                                        // [B,Hkv,C,Dk+Dv]
        });
        return (dQ, dKV.narrow(-1, 0, k.shape[3]), dKV.narrow(-1, k.shape[3], v.shape[3]));
    }

    /// <summary>Autograd glue: the collectives run inside forward and backward, never under autograd.</summary>
    sealed class RingFunction : autograd.MultiTensorFunction<RingFunction>
    {
        public override string Name => nameof(RingFunction);

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (group, kernel, layout) = ((IProcessGroup)vars[0], (IBlockAttention)vars[1], (Layout)vars[2]);
            var (q, k, v) = ((Tensor)vars[3], (Tensor)vars[4], (Tensor)vars[5]);
            using var noGrad = no_grad();
            var final = ForwardPass(group, kernel, layout, q, k, v);
            ctx.save_data("group", group);
            ctx.save_data("kernel", kernel);
            ctx.save_data("layout", layout);
            ctx.save_data("final", final);
            ctx.save_for_backward([q, k, v]);
            return [final.Output];
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var saved = ctx.get_saved_variables();
            var (dQ, dK, dV) = BackwardPass((IProcessGroup)ctx.get_data("group"), (IBlockAttention)ctx.get_data("kernel"),
                (Layout)ctx.get_data("layout"), saved[0], saved[1], saved[2], gradOutputs[0], (BlockOutput)ctx.get_data("final"));
            return [null!, null!, null!, dQ, dK, dV];
        }
    }
}
