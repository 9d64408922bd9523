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
/// a query block's future are skipped (zigzag balances what remains). Packed documents add the document mask
/// by global position; a K,V block that shares no document with the query block is skipped the same way, so
/// documents shorter than a shard cut the work (the bytes do not change: every block still travels).
/// </summary>
public sealed class RingAttention(AttentionKind kind) : ISequenceParallelAttention, IOverlapReporting
{
    /// <summary>Block computation vs time blocked in each ring step's Wait, forward and backward.</summary>
    public OverlapLog Overlap { get; } = new();

    public string Name => kind == AttentionKind.Softmax ? "ring-softmax" : "ring-linear";

    public MethodCapabilities Supports => BlockKernels.Capabilities(kind);

    public FlopAlgorithm Flops => kind == AttentionKind.Softmax ? FlopAlgorithm.Softmax : FlopAlgorithm.LeftProductLinear;

    /// <summary>
    /// Forward W-1 SendRecvs of the KV block, W-1 steps; backward 2(W-1) (KV blocks and their dK,dV accumulators)
    /// in W rounds (the accumulators' last hop home adds one).
    /// </summary>
    public CommPrediction PredictComm(CommShape shape, int rank)
    {
        long w = shape.WorldSize, block = shape.KeyValueBytes;
        return new(Name, rank,
            DirectionPrediction.Of(w - 1, (CommKind.SendRecv, w - 1, (w - 1) * block, (w - 1) * block)),
            DirectionPrediction.Of(w == 1 ? 0 : w, (CommKind.SendRecv, 2 * (w - 1), 2 * (w - 1) * block, 2 * (w - 1) * block)));
    }

    public Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options)
    {
        var decay = MethodChecks.Validate(this, group, q, k, v, options);
        var call = new RingCall(group, BlockKernels.For(kind, options.Causal, q.shape[3], decay, options.Documents), options.Layout, Overlap);
        return RingFunction.apply(call, q, k, v)[0];
    }

    /// <summary>What one layer call needs besides the tensors (kept on the autograd context for backward).</summary>
    sealed record RingCall(IProcessGroup Group, IBlockAttention Kernel, Layout Layout, OverlapLog Overlap)
    {
        /// <summary>Every rank's global positions, rank order.</summary>
        public Tensor[] Positions(Tensor q) => MethodChecks.AllPositions(q.shape[2], Group.WorldSize, Layout, q.device);
    }

    /// <summary>O_r = merge over u of block(Q_r, K_u, V_u), the blocks arriving around the ring.</summary>
    static BlockOutput ForwardPass(RingCall call, Tensor q, Tensor k, Tensor v)
    {
        var positions = call.Positions(q);
        BlockOutput? merged = null;
        Ring.Visit(call.Group, cat([k, v], -1), (block, owner) =>                        // [B,Hkv,C,Dk+Dv]
        {
            var part = call.Kernel.Forward(q, block.narrow(-1, 0, k.shape[3]), block.narrow(-1, k.shape[3], v.shape[3]),
                                           positions[call.Group.Rank], positions[owner]);
            if (part is not null) merged = merged is null ? part : call.Kernel.Merge(merged, part);
        }, call.Overlap);
        // The own block always contributes (a token sees itself), so merged is set.
        return merged!;
    }

    /// <summary>dQ_r = sum_u dQ(Q_r, K_u); dK_u, dV_u summed over every query rank on the travelling accumulator.</summary>
    static (Tensor DQ, Tensor DK, Tensor DV) BackwardPass(RingCall call, Tensor q, Tensor k, Tensor v, Tensor dO, BlockOutput final)
    {
        var positions = call.Positions(q);
        var dQ = zeros_like(q);                                                          // [B,H,C,Dk]
        var dKV = Ring.VisitAccumulate(call.Group, cat([k, v], -1), (block, owner) =>
        {
            var grads = call.Kernel.Backward(q, block.narrow(-1, 0, k.shape[3]), block.narrow(-1, k.shape[3], v.shape[3]),
                                             positions[call.Group.Rank], positions[owner], dO, final);
            dQ = dQ.Plus(grads.DQ);
            return cat([grads.DK, grads.DV], -1);                                        // [B,Hkv,C,Dk+Dv]
        }, call.Overlap);
        return (dQ, dKV.narrow(-1, 0, k.shape[3]), dKV.narrow(-1, k.shape[3], v.shape[3]));
    }

    /// <summary>Autograd glue: the collectives run inside forward and backward, never under autograd.</summary>
    sealed class RingFunction : autograd.MultiTensorFunction<RingFunction>
    {
        public override string Name => nameof(RingFunction);

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (call, q, k, v) = ((RingCall)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3]);
            using var noGrad = no_grad();
            var final = ForwardPass(call, q, k, v);
            ctx.save_data("call", call);
            ctx.save_data("final", final);
            ctx.save_for_backward([q, k, v]);
            return [final.Output];
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var saved = ctx.get_saved_variables();
            var (dQ, dK, dV) = BackwardPass((RingCall)ctx.get_data("call"), saved[0], saved[1], saved[2], gradOutputs[0],
                                            (BlockOutput)ctx.get_data("final"));
            return [null!, dQ, dK, dV];
        }
    }
}
