using Lasp2.Reference;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>The attention kind a method computes.</summary>
public enum AttentionKind
{
    /// <summary>Linear attention (with optional per-head decay).</summary>
    Linear,
    /// <summary>Softmax attention (with optional grouped-query KV heads).</summary>
    Softmax,
}

/// <summary>How a method computes attention, which fixes the matrix products it needs.</summary>
public enum FlopAlgorithm
{
    /// <summary>
    /// Linear attention in chunked form (single-device kernel, LASP-1, LASP-2): causal = per block the
    /// state K_b^T V_b, the inter term Q_b S_{b-1} and the masked intra term (Q_b K_b^T (.) Psi) V_b;
    /// unmasked = the right product Q (K^T V).
    /// </summary>
    ChunkedLinear,
    /// <summary>Linear attention as a left product (Q K^T (.) M) V over token pairs: Ring Attention (linear).</summary>
    LeftProductLinear,
    /// <summary>Softmax attention softmax(Q K^T) V over token pairs (Ring softmax, AllGather-CP, Ulysses).</summary>
    Softmax,
}

/// <summary>Options shared by every sequence-parallel method; each method checks what it supports.</summary>
/// <param name="Causal">Inclusive causal mask (true) or full bidirectional attention (false).</param>
/// <param name="Decay">Per-head lambda in (0, 1] for linear attention; null means 1 for every head.</param>
/// <param name="Layout">How the sequence is laid out over the ranks.</param>
/// <param name="BlockSize">Block length of local chunked kernels (&gt;= 1).</param>
/// <param name="Gates">A gated recurrence and this rank's shard of its log-gates and beta (null: the constant
/// <paramref name="Decay"/>); only methods whose <see cref="ISequenceParallelAttention.Recurrences"/> list it accept it.</param>
/// <param name="Documents">
/// Packed documents over the global sequence (cu_seqlens), or null for one document: attention stays inside each
/// document (linear: the state starts from zero at each document start; softmax: keys of the query's document only).
/// </param>
public sealed record AttentionOptions(
    bool Causal = true,
    double[]? Decay = null,
    Layout Layout = Layout.Contiguous,
    int BlockSize = 64,
    Gates? Gates = null,
    DocumentBoundaries? Documents = null);

/// <summary>Which masks a method can combine with packed documents (<see cref="AttentionOptions.Documents"/>).</summary>
public enum DocumentSupport
{
    /// <summary>No document boundaries.</summary>
    None,
    /// <summary>With the causal mask only.</summary>
    Causal,
    /// <summary>With the causal mask and without a mask.</summary>
    CausalAndUnmasked,
}

/// <summary>What a method supports (checked before it runs, so unsupported options fail clearly).</summary>
public sealed record MethodCapabilities(
    AttentionKind Kind,
    bool Causal,
    bool Unmasked,
    bool Decay,
    IReadOnlyList<Layout> Layouts,
    bool GroupedKv,
    DocumentSupport Documents = DocumentSupport.None)
{
    /// <summary>True when the method runs packed documents under this mask.</summary>
    public bool SupportsDocuments(bool causal) =>
        Documents == DocumentSupport.CausalAndUnmasked || (causal && Documents == DocumentSupport.Causal);
}

/// <summary>
/// A sequence-parallel attention method. Each rank calls <see cref="Forward"/> with its local shard
/// q [B, H, N/W, Dk], k and v [B, Hkv, N/W, .] (laid out by <see cref="AttentionOptions.Layout"/>) and
/// gets its shard of the output; backward runs through TorchSharp autograd.
/// </summary>
public interface ISequenceParallelAttention
{
    /// <summary>Registry name, e.g. "lasp2".</summary>
    string Name { get; }

    /// <summary>What the method supports.</summary>
    MethodCapabilities Supports { get; }

    /// <summary>The matrix products one layer call computes (what the benchmark's FLOP count uses).</summary>
    FlopAlgorithm Flops { get; }

    /// <summary>
    /// This method's communication on <paramref name="rank"/> for <paramref name="shape"/>, per direction: calls,
    /// bytes and sequential steps (its row of the table in docs/algorithms.md, "Communication"). Call it through
    /// <see cref="CommModel.Predict(ISequenceParallelAttention, CommShape, int)"/>, which checks the arguments.
    /// </summary>
    CommPrediction PredictComm(CommShape shape, int rank);

    /// <summary>
    /// Why the method cannot run on <paramref name="worldSize"/> ranks with <paramref name="heads"/> query and
    /// <paramref name="kvHeads"/> KV heads (e.g. Ulysses shards heads: H % W == 0), or null when it can.
    /// </summary>
    string? Unsupported(int worldSize, long heads, long kvHeads) => null;

    /// <summary>The recurrences the method takes through <see cref="AttentionOptions.Gates"/> (none by default).</summary>
    IReadOnlyList<Recurrence> Recurrences => [];

    /// <summary>This rank's output shard [B, H, N/W, Dv].</summary>
    Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options);
}
