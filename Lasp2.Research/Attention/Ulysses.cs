using Lasp2.Reference;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// DeepSpeed-Ulysses (Jacobs et al. 2023): all-to-all from sequence shards to head shards, full attention
/// over all N tokens on H/W query heads (and Hkv/W KV heads), all-to-all back. Softmax
/// (<see cref="OnlineSoftmax"/>, one block) or linear attention (<see cref="LeftProduct"/>, one block, with
/// this rank's heads' decays). Per direction 4 all-to-alls: forward Q, K, V in and O out; backward dO in
/// and dQ, dK, dV out, each moving (W-1)/W of its tensor. Tokens arrive in rank order; the causal mask
/// uses their global positions, so both layouts work without reordering; so does the document mask of packed
/// documents (the work does not change: one dense N x N block per head). Requires H % W == 0 and
/// Hkv % W == 0.
/// </summary>
public sealed class Ulysses(AttentionKind kind) : ISequenceParallelAttention
{
    public string Name => kind == AttentionKind.Softmax ? "ulysses-softmax" : "ulysses-linear";

    public MethodCapabilities Supports => BlockKernels.Capabilities(kind);

    public FlopAlgorithm Flops => kind == AttentionKind.Softmax ? FlopAlgorithm.Softmax : FlopAlgorithm.LeftProductLinear;

    /// <summary>
    /// 4 AllToAlls per direction, of Q, K, V, O (forward) or dO, dQ, dK, dV (backward): (W-1)/W of
    /// B C e (H Dk + Hkv Dk + Hkv Dv + H Dv) each way; 4 steps.
    /// </summary>
    public CommPrediction PredictComm(CommShape shape, int rank)
    {
        long w = shape.WorldSize, perToken = (long)shape.Batch * shape.ElementSize;
        long[] widths = [shape.Heads * shape.DimK, shape.KvHeads * shape.DimK, shape.KvHeads * shape.DimV, shape.Heads * shape.DimV];
        // an AllToAll of b bytes moves (W-1) (b / W) each way; b / W = B C e x / W over the local tokens
        long bytes = widths.Sum(x => (w - 1) * (perToken * shape.Local * x / w));
        var allToAll = DirectionPrediction.Of(4, (CommKind.AllToAll, 4, bytes, bytes));
        return new(Name, rank, allToAll, allToAll);
    }

    public Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options)
    {
        var decay = MethodChecks.Validate(this, group, q, k, v, options);
        int worldSize = group.WorldSize;
        long headsPerRank = q.shape[1] / worldSize;
        // this rank's heads h in [r H/W, (r+1) H/W) keep their own decays
        var kernel = BlockKernels.For(kind, options.Causal, q.shape[3],
                                      decay.Skip((int)(group.Rank * headsPerRank)).Take((int)headsPerRank).ToArray(), options.Documents);
        var positions = cat(MethodChecks.AllPositions(q.shape[2], worldSize, options.Layout, q.device), 0); // [N] rank order
        return UlyssesFunction.apply(group, kernel, positions, q, k, v)[0];
    }

    public string? Unsupported(int worldSize, long heads, long kvHeads) =>
        heads % worldSize != 0 ? $"{Name} shards heads over ranks: {heads} query heads are not divisible by worldSize = {worldSize}"
        : kvHeads % worldSize != 0 ? $"{Name} shards KV heads over ranks: {kvHeads} KV heads are not divisible by worldSize = {worldSize}"
        : null;

    /// <summary>[B,H,C,D] sequence shard -> [B,H/W,N,D] head shard (tokens in rank order).</summary>
    static Tensor ToHeads(IProcessGroup group, Tensor x) => group.AllToAll(x, splitDim: 1, concatDim: 2);

    /// <summary>[B,H/W,N,D] head shard -> [B,H,C,D] sequence shard.</summary>
    static Tensor ToSequence(IProcessGroup group, Tensor x) => group.AllToAll(x, splitDim: 2, concatDim: 1);

    /// <summary>Autograd glue: the all-to-alls run inside forward and backward, never under autograd.</summary>
    sealed class UlyssesFunction : autograd.MultiTensorFunction<UlyssesFunction>
    {
        public override string Name => nameof(UlyssesFunction);

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (group, kernel, positions) = ((IProcessGroup)vars[0], (IBlockAttention)vars[1], (Tensor)vars[2]);
            using var noGrad = no_grad();
            var (q, k, v) = (ToHeads(group, (Tensor)vars[3]), ToHeads(group, (Tensor)vars[4]), ToHeads(group, (Tensor)vars[5])); // [B,H/W,N,D]
            var final = kernel.Forward(q, k, v, positions, positions)!;                  // [B,H/W,N,Dv]
            ctx.save_data("group", group);
            ctx.save_data("kernel", kernel);
            ctx.save_data("final", final);
            ctx.save_for_backward([q, k, v, positions]);
            return [ToSequence(group, final.Output)];                                    // [B,H,C,Dv]
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var (group, kernel) = ((IProcessGroup)ctx.get_data("group"), (IBlockAttention)ctx.get_data("kernel"));
            var saved = ctx.get_saved_variables();
            var grads = kernel.Backward(saved[0], saved[1], saved[2], saved[3], saved[3], ToHeads(group, gradOutputs[0]),
                                        (BlockOutput)ctx.get_data("final"));
            return [null!, null!, null!, ToSequence(group, grads.DQ), ToSequence(group, grads.DK), ToSequence(group, grads.DV)];
        }
    }
}
