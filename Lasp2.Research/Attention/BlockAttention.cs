using Lasp2.Reference;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// The partial result of a query block on some key blocks: the output and, for softmax, the
/// log-sum-exp of the scores of each query row ([B,H,Cq,1]; -inf where every key so far was masked).
/// </summary>
public sealed record BlockOutput(Tensor Output, Tensor? Lse);

/// <summary>Gradients of one (query block, key block) pair: dQ [B,H,Cq,Dk], dK [B,Hkv,Ck,Dk], dV [B,Hkv,Ck,Dv].</summary>
public sealed record BlockGrads(Tensor DQ, Tensor DK, Tensor DV);

/// <summary>
/// Attention of one query block on one key block, with tokens identified by their global positions
/// (int64 [Cq] and [Ck]) so that any layout and any block order gives the causal mask right. It is the
/// unit that Ring Attention, AllGather-CP and Ulysses distribute: softmax (<see cref="OnlineSoftmax"/>)
/// or the linear left product (<see cref="LeftProduct"/>).
/// </summary>
public interface IBlockAttention
{
    /// <summary>The block's partial result, or null when the mask hides every (query, key) pair.</summary>
    BlockOutput? Forward(Tensor q, Tensor k, Tensor v, Tensor queryPositions, Tensor keyPositions);

    /// <summary>Combines the partial results of two disjoint sets of key blocks.</summary>
    BlockOutput Merge(BlockOutput accumulated, BlockOutput block);

    /// <summary>
    /// Gradients of the block given dO and the final (merged over all key blocks) result; zeros when the
    /// mask hides every pair.
    /// </summary>
    BlockGrads Backward(Tensor q, Tensor k, Tensor v, Tensor queryPositions, Tensor keyPositions,
                        Tensor dO, BlockOutput final);
}

/// <summary>The block kernel of each attention kind, and what a method distributing it supports.</summary>
public static class BlockKernels
{
    /// <summary>
    /// Causal and unmasked, both layouts, packed documents with either mask (the document mask is one more mask by
    /// position); softmax with grouped KV heads and no decay, linear with decay and Hkv = H.
    /// </summary>
    public static MethodCapabilities Capabilities(AttentionKind kind) =>
        new(kind, Causal: true, Unmasked: true, Decay: kind == AttentionKind.Linear,
            [Layout.Contiguous, Layout.Zigzag], GroupedKv: kind == AttentionKind.Softmax, DocumentSupport.CausalAndUnmasked);

    /// <summary>
    /// Softmax (<see cref="OnlineSoftmax"/>, scale 1/sqrt(Dk)) or linear (<see cref="LeftProduct"/> with the per-head
    /// <paramref name="decay"/> of the query block's heads), masked to <paramref name="documents"/> when given.
    /// </summary>
    public static IBlockAttention For(AttentionKind kind, bool causal, long dimK, double[] decay, DocumentBoundaries? documents = null) =>
        kind == AttentionKind.Softmax ? new OnlineSoftmax(causal, 1.0 / Math.Sqrt(dimK), documents) : new LeftProduct(causal, decay, documents);
}
