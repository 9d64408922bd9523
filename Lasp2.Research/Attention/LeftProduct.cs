using Lasp2.Reference;
using Lasp2.Research.Kernels;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// Linear attention of one query block on one key block as a left product, without the right-product
/// trick (the form the LASP-2 paper's Ring Attention and Megatron-SP baselines ran, quadratic compute):
/// O = (Q K^T (.) D) V with D[h,i,j] = lambda_h^(p_i - p_j) if p_i &gt;= p_j, else 0, for global positions
/// p (causal), or D = 1 (no mask); with packed documents D is also 0 between tokens of different documents.
/// Blocks merge by summation. Communication: none.
/// </summary>
/// <param name="causal">Inclusive causal mask with decay.</param>
/// <param name="decay">Per-head lambda in (0, 1] for the heads of the query block (1 without decay).</param>
/// <param name="documents">Packed documents over the global positions, or null.</param>
public sealed class LeftProduct(bool causal, double[] decay, DocumentBoundaries? documents = null) : IBlockAttention
{
    public BlockOutput? Forward(Tensor q, Tensor k, Tensor v, Tensor queryPositions, Tensor keyPositions)
    {
        using var scope = NewDisposeScope();
        var mask = DecayMask(queryPositions, keyPositions, q);
        if (mask is not null && !mask.any().item<bool>()) return null;
        ComputeMeter.Add(PhaseFlops.BlockForward(q.shape[0] * q.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3]));
        // O = (Q K^T (.) D) V
        var output = Scores(q, k, mask).matmul(v);                                       // [B,H,Cq,Dv]
        return new BlockOutput(output.MoveToOuterDisposeScope(), null);
    }

    public BlockOutput Merge(BlockOutput accumulated, BlockOutput block) =>
        new(accumulated.Output.Plus(block.Output), null);

    public BlockGrads Backward(Tensor q, Tensor k, Tensor v, Tensor queryPositions, Tensor keyPositions,
                               Tensor dO, BlockOutput final)
    {
        using var scope = NewDisposeScope();
        var mask = DecayMask(queryPositions, keyPositions, q);
        if (mask is not null && !mask.any().item<bool>())
            return new BlockGrads(zeros_like(q).MoveToOuterDisposeScope(), zeros_like(k).MoveToOuterDisposeScope(),
                                  zeros_like(v).MoveToOuterDisposeScope());
        ComputeMeter.Add(PhaseFlops.BlockBackward(q.shape[0] * q.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3]));
        // A = Q K^T (.) D;  dA = dO V^T (.) D;  dQ = dA K,  dK = dA^T Q,  dV = A^T dO
        var scores = Scores(q, k, mask);                                                 // [B,H,Cq,Ck]
        var dScores = dO.matmul(v.transpose(-2, -1));
        if (mask is not null) dScores = dScores * mask;
        var dQ = dScores.matmul(k);                                                      // [B,H,Cq,Dk]
        var dK = dScores.transpose(-2, -1).matmul(q);                                    // [B,H,Ck,Dk]
        var dV = scores.transpose(-2, -1).matmul(dO);                                    // [B,H,Ck,Dv]
        return new BlockGrads(dQ.MoveToOuterDisposeScope(), dK.MoveToOuterDisposeScope(), dV.MoveToOuterDisposeScope());
    }

    static Tensor Scores(Tensor q, Tensor k, Tensor? mask)
    {
        var scores = q.matmul(k.transpose(-2, -1));                                      // [B,H,Cq,Ck]
        return mask is null ? scores : scores * mask;
    }

    /// <summary>D [1,H,Cq,Ck] (unmasked with documents [Cq,Ck]) by global positions, or null without a mask.</summary>
    Tensor? DecayMask(Tensor queryPositions, Tensor keyPositions, Tensor like)
    {
        var (queries, keys) = (queryPositions.to(like.device), keyPositions.to(like.device));
        var allowed = Masks.Allowed(queries, keys, causal, documents)?.to(like.dtype);     // [Cq,Ck]
        if (!causal) return allowed;
        var distance = queries.unsqueeze(1) - keys.unsqueeze(0);                          // [Cq,Ck] p_i - p_j
        // lambda^(p_i - p_j) on allowed pairs; the clamp keeps lambda^(negative) from overflowing before the mask.
        return Masks.DecayPowers(decay, distance.AtLeast(0).to(like.dtype)) * allowed!;   // [1,H,Cq,Ck]
    }
}
