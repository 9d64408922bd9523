using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>
/// Linear attention in every single-device form, with a per-head scalar decay lambda in (0, 1]
/// (lambda = 1: basic linear attention; Lightning and Retention are decays). All forms take
/// q, k [B, H, N, Dk] and v [B, H, N, Dv], return o [B, H, N, Dv], and are differentiable.
/// The causal mask is inclusive: token i sees tokens j &lt;= i, itself included.
/// A decay other than 1 requires the causal mask (it weights the past by distance).
/// </summary>
public static class LinearAttention
{
    /// <summary>
    /// Left product, the slowest and most obvious form (the root of the chain of trust):
    /// O = (phi(Q) phi(K)^T (.) D) V with D[i,j] = lambda^(i-j) for i &gt;= j (causal), or O = Q K^T V.
    /// </summary>
    public static Tensor Quadratic(Tensor q, Tensor k, Tensor v, bool causal = true,
                                   double[]? decay = null, FeatureMap featureMap = FeatureMap.Identity)
    {
        var lambda = Guards.LinearAttentionInputs(q, k, v, causal, decay);
        using var scope = NewDisposeScope();
        var (phiQ, phiK) = (featureMap.Apply(q), featureMap.Apply(k));
        var scores = phiQ.matmul(phiK.transpose(-2, -1));                                  // [B,H,N,N]
        if (causal) scores = scores * Masks.Decay(q.shape[2], lambda, q.dtype, q.device); // (.) D
        return scores.matmul(v).MoveToOuterDisposeScope();                                 // [B,H,N,Dv]
    }

    /// <summary>Right product, unmasked only: O = phi(Q) (phi(K)^T V); M = K^T V is the memory state.</summary>
    public static Tensor RightProduct(Tensor q, Tensor k, Tensor v, FeatureMap featureMap = FeatureMap.Identity)
    {
        Guards.LinearAttentionInputs(q, k, v, causal: false, decay: null);
        using var scope = NewDisposeScope();
        var state = featureMap.Apply(k).transpose(-2, -1).matmul(v);                      // [B,H,Dk,Dv]
        return featureMap.Apply(q).matmul(state).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Recurrent form, token by token, inclusive: S_i = lambda S_{i-1} + k_i^T v_i, o_i = q_i S_i.
    /// Always causal.
    /// </summary>
    public static Tensor Recurrent(Tensor q, Tensor k, Tensor v, double[]? decay = null,
                                   FeatureMap featureMap = FeatureMap.Identity)
    {
        var lambda = Guards.LinearAttentionInputs(q, k, v, causal: true, decay);
        using var scope = NewDisposeScope();
        var (phiQ, phiK) = (featureMap.Apply(q), featureMap.Apply(k));
        var lambdaHead = Masks.DecayPower(lambda, 1.0, q.dtype, q.device);               // [1,H,1,1]
        var state = zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3], dtype: q.dtype, device: q.device);
        var outputs = new List<Tensor>();
        for (long i = 0; i < q.shape[2]; i++)
        {
            var (qi, ki, vi) = (phiQ.narrow(2, i, 1), phiK.narrow(2, i, 1), v.narrow(2, i, 1)); // [B,H,1,D]
            // S_i = lambda S_{i-1} + k_i^T v_i  (the token enters the state before it reads it)
            state = (lambdaHead * state).Plus(ki.transpose(-2, -1).matmul(vi));
            outputs.Add(qi.matmul(state));                                                 // o_i = q_i S_i
        }
        return cat(outputs, 2).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Chunked form with block length <paramref name="blockSize"/> (&gt;= 1; need not divide N, the
    /// tail block is shorter). Causal, for block b with local index i and length L:
    /// O_b = lambda^(i+1) Q_b S_{b-1} + (Q_b K_b^T (.) D_L) V_b and
    /// S_b = lambda^L S_{b-1} + sum_j lambda^(L-1-j) k_j^T v_j. Unmasked: O = Q sum_b K_b^T V_b.
    /// </summary>
    public static Tensor Chunked(Tensor q, Tensor k, Tensor v, int blockSize, bool causal = true,
                                 double[]? decay = null, FeatureMap featureMap = FeatureMap.Identity)
    {
        var lambda = Guards.LinearAttentionInputs(q, k, v, causal, decay);
        Guards.AtLeast(blockSize, 1, nameof(blockSize));
        using var scope = NewDisposeScope();
        var (phiQ, phiK) = (featureMap.Apply(q), featureMap.Apply(k));
        long n = q.shape[2];
        var state = zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3], dtype: q.dtype, device: q.device);
        if (!causal)
        {
            for (long start = 0; start < n; start += blockSize)
            {
                long length = Math.Min(blockSize, n - start);
                state = state.Plus(phiK.narrow(2, start, length).transpose(-2, -1).matmul(v.narrow(2, start, length)));
            }
            return phiQ.matmul(state).MoveToOuterDisposeScope();
        }

        var outputs = new List<Tensor>();
        for (long start = 0; start < n; start += blockSize)
        {
            long length = Math.Min(blockSize, n - start);                                  // tail: shorter block
            var (qb, kb, vb) = (phiQ.narrow(2, start, length), phiK.narrow(2, start, length), v.narrow(2, start, length));
            var local = Scalars.Range(0, length, q.dtype, q.device);
            var queryDecay = Masks.DecayPowers(lambda, local.Plus(1)).unsqueeze(-1);         // lambda^(i+1)     [1,H,L,1]
            var keyDecay = Masks.DecayPowers(lambda, Scalars.Minus(length - 1, local)).unsqueeze(-1); // lambda^(L-1-j)   [1,H,L,1]
            // inter: lambda^(i+1) q_i S_{b-1};  intra: (Q_b K_b^T (.) D_L) V_b
            var inter = (queryDecay * qb).matmul(state);
            var intra = (qb.matmul(kb.transpose(-2, -1)) * Masks.Decay(length, lambda, q.dtype, q.device)).matmul(vb);
            outputs.Add(inter.Plus(intra));
            // S_b = lambda^L S_{b-1} + sum_j lambda^(L-1-j) k_j^T v_j
            state = (Masks.DecayPower(lambda, length, q.dtype, q.device) * state)
                    .Plus((keyDecay * kb).transpose(-2, -1).matmul(vb));
        }
        return cat(outputs, 2).MoveToOuterDisposeScope();
    }

}
