using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>
/// Softmax attention, the softmax layers of a hybrid model: O = softmax(Q K^T * scale + mask) V.
/// q [B, H, Nq, D], k and v [B, Hkv, Nk, D] with H a multiple of Hkv (grouped-query attention: query
/// head h reads KV head h / (H / Hkv)). Returns [B, H, Nq, Dv].
/// </summary>
public static class SoftmaxAttention
{
    /// <summary>
    /// Attention with an optional causal mask. <paramref name="scale"/> defaults to 1/sqrt(D).
    /// Without positions, queries and keys are the same tokens 0..N-1. With
    /// <paramref name="queryPositions"/> [Nq] and <paramref name="keyPositions"/> [Nk] (int64 global
    /// token indices), query i may attend to key j iff queryPositions[i] &gt;= keyPositions[j]; every
    /// query must then see at least one key. With <paramref name="documents"/> (over the positions, or 0..N-1),
    /// a query attends only to keys of its own document, causal or not.
    /// </summary>
    public static Tensor Forward(Tensor q, Tensor k, Tensor v, bool causal = true, double? scale = null,
                                 Tensor? queryPositions = null, Tensor? keyPositions = null,
                                 DocumentBoundaries? documents = null)
    {
        if ((queryPositions is null) != (keyPositions is null))
            throw new ArgumentException("give both queryPositions and keyPositions, or neither.", nameof(keyPositions));
        Guards.AttentionInputs(q, k, v, allowGroupedKv: true, sameTokens: queryPositions is null);
        if (queryPositions is not null && (queryPositions.numel() != q.shape[2] || keyPositions!.numel() != k.shape[2]))
            throw new ArgumentException(
                $"positions must have one entry per token: q has {q.shape[2]}, k has {k.shape[2]}, " +
                $"got {queryPositions.numel()} and {keyPositions!.numel()}.", nameof(queryPositions));

        if (documents is not null && queryPositions is null) documents.CheckLength(q.shape[2], nameof(documents));
        using var scope = NewDisposeScope();
        double s = scale ?? 1.0 / Math.Sqrt(q.shape[3]);
        long groups = q.shape[1] / k.shape[1];
        var scores = q.matmul(RepeatKv(k, groups).transpose(-2, -1)).Times(s);            // [B,H,Nq,Nk]
        var (queries, keys) = queryPositions is null
            ? (Scalars.Range(0, q.shape[2], int64, q.device), Scalars.Range(0, k.shape[2], int64, q.device))
            : (queryPositions.to(q.device), keyPositions!.to(q.device));
        var allowed = Masks.Allowed(queries, keys, causal, documents);                    // [Nq,Nk] or null
        if (allowed is not null) scores = scores.MaskedFill(allowed.logical_not(), double.NegativeInfinity);
        return scores.softmax(-1).matmul(RepeatKv(v, groups)).MoveToOuterDisposeScope();
    }

    /// <summary>Repeats each KV head <paramref name="groups"/> times along dim 1: [B,Hkv,N,D] -> [B,Hkv*groups,N,D].</summary>
    public static Tensor RepeatKv(Tensor kv, long groups) =>
        groups == 1 ? kv.alias() : kv.repeat_interleave(groups, dim: 1);
}
