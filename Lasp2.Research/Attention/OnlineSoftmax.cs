using Lasp2.Research.Kernels;
using Lasp2.Reference;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// Softmax attention one key block at a time (blockwise / flash-attention form, Milakov and Gimelshein
/// 2018; Liu et al. 2023 Ring Attention). A block yields o_b = softmax(S_b) V_b and lse_b = log sum_j
/// exp(S_b[., j]); two blocks merge by the log-sum-exp rule, so the key blocks can arrive in any order.
/// Backward recomputes P from the final lse (no N x N matrix is kept). Grouped-query attention: query
/// head h reads KV head h / (H / Hkv). Communication: none (the strategies move the blocks).
/// </summary>
/// <param name="causal">Mask key positions after the query position (inclusive causal mask).</param>
/// <param name="scale">Score scale, usually 1/sqrt(Dk).</param>
/// <param name="documents">Packed documents over the global positions (a query sees its own document only), or null.</param>
public sealed class OnlineSoftmax(bool causal, double scale, DocumentBoundaries? documents = null) : IBlockAttention
{
    /// <summary>
    /// Merges two partial results by the log-sum-exp rule: lse = log(e^lse_a + e^lse_b),
    /// o = (e^(lse_a - lse) o_a + e^(lse_b - lse) o_b). Rows masked in both (lse = -inf) stay o = 0, lse = -inf.
    /// </summary>
    public static (Tensor Output, Tensor Lse) Merge(Tensor outputA, Tensor lseA, Tensor outputB, Tensor lseB)
    {
        using var scope = NewDisposeScope();
        var peak = maximum(lseA, lseB);
        peak = peak.MaskedFill(peak.isneginf(), 0.0);                                  // keep -inf - -inf out
        var (weightA, weightB) = ((lseA - peak).exp(), (lseB - peak).exp());           // [B,H,Cq,1]
        var total = weightA.Plus(weightB);
        var output = (weightA * outputA).Plus(weightB * outputB) / total.MaskedFill(total.logical_not(), 1.0);
        return (output.MoveToOuterDisposeScope(), peak.Plus(total.log()).MoveToOuterDisposeScope());
    }

    /// <summary>rowsum(dO (.) O) [B,H,Cq,1], the D term of the softmax backward.</summary>
    public static Tensor Delta(Tensor dO, Tensor output) => (dO * output).sum(-1, keepdim: true);

    public BlockOutput? Forward(Tensor q, Tensor k, Tensor v, Tensor queryPositions, Tensor keyPositions)
    {
        using var scope = NewDisposeScope();
        var hidden = Hidden(queryPositions, keyPositions, q.device);
        if (hidden is not null && hidden.all().item<bool>()) return null;
        ComputeMeter.Add(PhaseFlops.BlockForward(q.shape[0] * q.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3]));
        var scores = Scores(q, k, hidden);                                              // [B,H,Cq,Ck]
        var lse = scores.logsumexp(-1, keepdim: true);                                  // [B,H,Cq,1]
        // P = exp(S - lse); a row with every key hidden has lse = -inf and P = 0.
        var probabilities = (scores - lse.MaskedFill(lse.isneginf(), 0.0)).exp();
        var output = probabilities.matmul(Repeat(v, q));                                // [B,H,Cq,Dv]
        return new BlockOutput(output.MoveToOuterDisposeScope(), lse.MoveToOuterDisposeScope());
    }

    public BlockOutput Merge(BlockOutput accumulated, BlockOutput block)
    {
        var (output, lse) = Merge(accumulated.Output, accumulated.Lse!, block.Output, block.Lse!);
        return new BlockOutput(output, lse);
    }

    public BlockGrads Backward(Tensor q, Tensor k, Tensor v, Tensor queryPositions, Tensor keyPositions,
                               Tensor dO, BlockOutput final)
    {
        using var scope = NewDisposeScope();
        var hidden = Hidden(queryPositions, keyPositions, q.device);
        if (hidden is not null && hidden.all().item<bool>())
            return Moved(zeros_like(q), zeros_like(k), zeros_like(v));
        ComputeMeter.Add(PhaseFlops.BlockBackward(q.shape[0] * q.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3]));
        // P_ij = exp(S_ij - lse_i) with the final lse: this block's share of the full softmax.
        var probabilities = (Scores(q, k, hidden) - final.Lse!).exp();                   // [B,H,Cq,Ck]
        // dV = P^T dO;  dP = dO V^T;  dS = P (.) (dP - rowsum(dO (.) O))
        var dV = probabilities.transpose(-2, -1).matmul(dO);                            // [B,H,Ck,Dv]
        var dP = dO.matmul(Repeat(v, q).transpose(-2, -1));                             // [B,H,Cq,Ck]
        var dS = probabilities * (dP - Delta(dO, final.Output));
        // S = scale Q K^T:  dQ = scale dS K,  dK = scale dS^T Q
        var dQ = dS.matmul(Repeat(k, q)).Times(scale);                                   // [B,H,Cq,Dk]
        var dK = dS.transpose(-2, -1).matmul(q).Times(scale);                            // [B,H,Ck,Dk]
        return Moved(dQ, SumGroups(dK, k), SumGroups(dV, v));
    }

    Tensor? Hidden(Tensor queryPositions, Tensor keyPositions, Device device) =>
        Masks.Allowed(queryPositions.to(device), keyPositions.to(device), causal, documents)?.logical_not(); // [Cq,Ck]

    Tensor Scores(Tensor q, Tensor k, Tensor? hidden)
    {
        var scores = q.matmul(Repeat(k, q).transpose(-2, -1)).Times(scale);              // [B,H,Cq,Ck]
        return hidden is null ? scores : scores.MaskedFill(hidden, double.NegativeInfinity);
    }

    /// <summary>KV heads repeated to the query heads (grouped-query attention).</summary>
    static Tensor Repeat(Tensor kv, Tensor q) => SoftmaxAttention.RepeatKv(kv, q.shape[1] / kv.shape[1]);

    /// <summary>Adjoint of <see cref="Repeat"/>: sums the gradients of the query heads sharing a KV head.</summary>
    static Tensor SumGroups(Tensor grad, Tensor kv)
    {
        long groups = grad.shape[1] / kv.shape[1];
        return groups == 1 ? grad : grad.view(grad.shape[0], kv.shape[1], groups, grad.shape[2], grad.shape[3]).sum(2);
    }

    static BlockGrads Moved(Tensor dQ, Tensor dK, Tensor dV) =>
        new(dQ.MoveToOuterDisposeScope(), dK.MoveToOuterDisposeScope(), dV.MoveToOuterDisposeScope());
}
