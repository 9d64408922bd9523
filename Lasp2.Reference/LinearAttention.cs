using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>
/// Linear attention in every single-device form, with a per-head scalar decay lambda in (0, 1]
/// (lambda = 1: basic linear attention; Lightning and Retention are decays). All forms take
/// q, k [B, H, N, Dk] and v [B, H, N, Dv], return o [B, H, N, Dv], and are differentiable.
/// The causal mask is inclusive: token i sees tokens j &lt;= i, itself included.
/// A decay other than 1 requires the causal mask (it weights the past by distance).
/// Optional <see cref="DocumentBoundaries"/> pack several documents into N: every form then attends only within
/// each token's document (the state starts from zero at each document start: lambda across a start is 0), so
/// the result equals running each document alone and concatenating.
/// </summary>
public static class LinearAttention
{
    /// <summary>
    /// Left product, the slowest and most obvious form (the root of the chain of trust):
    /// O = (phi(Q) phi(K)^T (.) D) V with D[i,j] = lambda^(i-j) for i &gt;= j (causal), or O = Q K^T V.
    /// </summary>
    public static Tensor Quadratic(Tensor q, Tensor k, Tensor v, bool causal = true,
                                   double[]? decay = null, FeatureMap featureMap = FeatureMap.Identity,
                                   DocumentBoundaries? documents = null)
    {
        var lambda = Guards.LinearAttentionInputs(q, k, v, causal, decay);
        documents?.CheckLength(q.shape[2], nameof(documents));
        using var scope = NewDisposeScope();
        var (phiQ, phiK) = (featureMap.Apply(q), featureMap.Apply(k));
        var scores = phiQ.matmul(phiK.transpose(-2, -1));                                  // [B,H,N,N]
        if (causal) scores = scores * Masks.Decay(q.shape[2], lambda, q.dtype, q.device); // (.) D
        if (documents is not null) scores = scores * SameDocument(documents, q);          // (.) [doc(i) = doc(j)]
        return scores.matmul(v).MoveToOuterDisposeScope();                                 // [B,H,N,Dv]
    }

    /// <summary>
    /// Right product, unmasked only: O = phi(Q) (phi(K)^T V); M = K^T V is the memory state. With documents, one
    /// state per document: O_d = phi(Q_d) (phi(K_d)^T V_d).
    /// </summary>
    public static Tensor RightProduct(Tensor q, Tensor k, Tensor v, FeatureMap featureMap = FeatureMap.Identity,
                                      DocumentBoundaries? documents = null)
    {
        Guards.LinearAttentionInputs(q, k, v, causal: false, decay: null);
        documents ??= DocumentBoundaries.Single(q.shape[2]);
        documents.CheckLength(q.shape[2], nameof(documents));
        using var scope = NewDisposeScope();
        var (phiQ, phiK) = (featureMap.Apply(q), featureMap.Apply(k));
        var outputs = new List<Tensor>();
        for (int d = 0; d < documents.Count; d++)
        {
            var (start, length) = (documents.CuSeqlens[d], documents.Lengths[d]);
            var state = phiK.narrow(2, start, length).transpose(-2, -1).matmul(v.narrow(2, start, length)); // [B,H,Dk,Dv]
            outputs.Add(phiQ.narrow(2, start, length).matmul(state));
        }
        return cat(outputs, 2).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Recurrent form, token by token, inclusive: S_i = lambda S_{i-1} + k_i^T v_i, o_i = q_i S_i.
    /// Always causal. At a document start the transition is 0: S_i = k_i^T v_i.
    /// </summary>
    public static Tensor Recurrent(Tensor q, Tensor k, Tensor v, double[]? decay = null,
                                   FeatureMap featureMap = FeatureMap.Identity, DocumentBoundaries? documents = null)
    {
        var lambda = Guards.LinearAttentionInputs(q, k, v, causal: true, decay);
        documents?.CheckLength(q.shape[2], nameof(documents));
        using var scope = NewDisposeScope();
        var (phiQ, phiK) = (featureMap.Apply(q), featureMap.Apply(k));
        var lambdaHead = Masks.DecayPower(lambda, 1.0, q.dtype, q.device);               // [1,H,1,1]
        var state = zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3], dtype: q.dtype, device: q.device);
        var outputs = new List<Tensor>();
        for (long i = 0; i < q.shape[2]; i++)
        {
            var (qi, ki, vi) = (phiQ.narrow(2, i, 1), phiK.narrow(2, i, 1), v.narrow(2, i, 1)); // [B,H,1,D]
            // S_i = lambda S_{i-1} + k_i^T v_i  (the token enters the state before it reads it; lambda = 0 at a document start)
            var carried = documents is not null && i > 0 && documents.StartsAt(i) ? zeros_like(state) : lambdaHead * state;
            state = carried.Plus(ki.transpose(-2, -1).matmul(vi));
            outputs.Add(qi.matmul(state));                                                 // o_i = q_i S_i
        }
        return cat(outputs, 2).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Chunked form with block length <paramref name="blockSize"/> (&gt;= 1; need not divide N, the
    /// tail block is shorter). Causal, for block b with local index i and length L:
    /// O_b = lambda^(i+1) Q_b S_{b-1} + (Q_b K_b^T (.) D_L) V_b and
    /// S_b = lambda^L S_{b-1} + sum_j lambda^(L-1-j) k_j^T v_j. Unmasked: O = Q sum_b K_b^T V_b.
    /// With documents (seg = <see cref="Masks.Segments"/> of the block): q_i reads S_{b-1} only if no document
    /// starts in the block up to i, k_j enters S_b only if none starts after j, lambda^L becomes 0 when one starts
    /// in the block, and D_L keeps pairs of one document; unmasked, one sum per document.
    /// </summary>
    public static Tensor Chunked(Tensor q, Tensor k, Tensor v, int blockSize, bool causal = true,
                                 double[]? decay = null, FeatureMap featureMap = FeatureMap.Identity,
                                 DocumentBoundaries? documents = null)
    {
        var lambda = Guards.LinearAttentionInputs(q, k, v, causal, decay);
        Guards.AtLeast(blockSize, 1, nameof(blockSize));
        documents ??= DocumentBoundaries.Single(q.shape[2]);
        documents.CheckLength(q.shape[2], nameof(documents));
        using var scope = NewDisposeScope();
        var (phiQ, phiK) = (featureMap.Apply(q), featureMap.Apply(k));
        long n = q.shape[2];
        if (!causal)
        {
            var documentOutputs = new List<Tensor>();
            for (int d = 0; d < documents.Count; d++)
            {
                var (first, end) = (documents.CuSeqlens[d], documents.CuSeqlens[d + 1]);
                var sum = zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3], dtype: q.dtype, device: q.device);
                for (long start = first; start < end; start += blockSize)
                {
                    long length = Math.Min(blockSize, end - start);
                    sum = sum.Plus(phiK.narrow(2, start, length).transpose(-2, -1).matmul(v.narrow(2, start, length)));
                }
                documentOutputs.Add(phiQ.narrow(2, first, end - first).matmul(sum));
            }
            return cat(documentOutputs, 2).MoveToOuterDisposeScope();
        }

        var state = zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3], dtype: q.dtype, device: q.device);
        var outputs = new List<Tensor>();
        for (long start = 0; start < n; start += blockSize)
        {
            long length = Math.Min(blockSize, n - start);                                  // tail: shorter block
            var (qb, kb, vb) = (phiQ.narrow(2, start, length), phiK.narrow(2, start, length), v.narrow(2, start, length));
            var local = Scalars.Range(0, length, q.dtype, q.device);
            // seg(i): document starts in the block up to i; S_{b-1} is segment 0
            var starts = documents.StartsWithin(start, length);
            var seg = Masks.Segments(length, starts, q.device);                            // [L]
            var reads = seg.IsEqualTo(0).to(q.dtype).view(1, 1, length, 1);           // q_i reads S_{b-1}
            var enters = seg.IsEqualTo(starts.Length).to(q.dtype).view(1, 1, length, 1); // k_j reaches S_b
            var same = Masks.SameDocument(seg, seg).to(q.dtype);                            // [L,L]
            var queryDecay = Masks.DecayPowers(lambda, local.Plus(1)).unsqueeze(-1) * reads; // lambda^(i+1)     [1,H,L,1]
            var keyDecay = Masks.DecayPowers(lambda, Scalars.Minus(length - 1, local)).unsqueeze(-1) * enters; // lambda^(L-1-j) [1,H,L,1]
            // inter: lambda^(i+1) q_i S_{b-1};  intra: (Q_b K_b^T (.) D_L) V_b
            var inter = (queryDecay * qb).matmul(state);
            var intra = (qb.matmul(kb.transpose(-2, -1)) * Masks.Decay(length, lambda, q.dtype, q.device) * same).matmul(vb);
            outputs.Add(inter.Plus(intra));
            // S_b = lambda^L S_{b-1} + sum_j lambda^(L-1-j) k_j^T v_j  (lambda^L -> 0 when a document starts in the block)
            var carried = starts.Length == 0 ? Masks.DecayPower(lambda, length, q.dtype, q.device) * state : zeros_like(state);
            state = carried.Plus((keyDecay * kb).transpose(-2, -1).matmul(vb));
        }
        return cat(outputs, 2).MoveToOuterDisposeScope();
    }

    /// <summary>[N, N] 1 where tokens i and j are in one document, else 0.</summary>
    static Tensor SameDocument(DocumentBoundaries documents, Tensor like)
    {
        var ids = documents.DocumentIds(Scalars.Range(0, like.shape[2], int64, like.device));
        return Masks.SameDocument(ids, ids).to(like.dtype);
    }
}
