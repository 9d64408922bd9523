using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>Causal and decay masks (Hadamard masks: 1/lambda^(i-j) where allowed, 0 elsewhere).</summary>
public static class Masks
{
    /// <summary>Inclusive causal mask Psi [N, N]: Psi[i, j] = 1 if i >= j else 0.</summary>
    public static Tensor Causal(long n, ScalarType dtype, Device device) =>
        ones(n, n, dtype: dtype, device: device).tril();

    /// <summary>
    /// Decay mask D [H, N, N]: D[h, i, j] = lambda_h^(i - j) for i >= j, else 0. With lambda = 1 it is
    /// the causal mask for every head.
    /// </summary>
    public static Tensor Decay(long n, double[] decay, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var index = Scalars.Range(0, n, dtype, device);
        var distance = (index.unsqueeze(1) - index.unsqueeze(0)).AtLeast(0);            // [N,N] i-j, >= 0
        var mask = DecayPowers(decay, distance).squeeze(0) * Causal(n, dtype, device);    // [H,N,N]
        return mask.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Causal permission for tokens at arbitrary global positions: allowed[i, j] = queryPositions[i] >=
    /// keyPositions[j] (bool [Nq, Nk]). Used for shards whose positions are not contiguous (zigzag).
    /// </summary>
    public static Tensor CausalAllowed(Tensor queryPositions, Tensor keyPositions) =>
        queryPositions.unsqueeze(1) >= keyPositions.unsqueeze(0);

    /// <summary>
    /// Which keys each query may see, by global positions (int64 [Nq] and [Nk]): the causal permission and/or the
    /// document permission (bool [Nq, Nk]), or null when every pair is allowed (no mask, one document). The one
    /// place the two are combined, for the references and every block kernel.
    /// </summary>
    public static Tensor? Allowed(Tensor queryPositions, Tensor keyPositions, bool causal, DocumentBoundaries? documents)
    {
        var allowed = causal ? CausalAllowed(queryPositions, keyPositions) : null;
        if (documents is null) return allowed;
        var same = SameDocument(documents.DocumentIds(queryPositions), documents.DocumentIds(keyPositions));
        return allowed is null ? same : allowed.logical_and(same);
    }

    /// <summary>
    /// Document permission: allowed[i, j] = queryDocuments[i] == keyDocuments[j] (bool [Nq, Nk]), from the
    /// document index of each token (<see cref="DocumentBoundaries.DocumentIds"/>).
    /// </summary>
    public static Tensor SameDocument(Tensor queryDocuments, Tensor keyDocuments) =>
        queryDocuments.unsqueeze(1) == keyDocuments.unsqueeze(0);

    /// <summary>
    /// The document segment of each token of a run of <paramref name="length"/> local tokens: seg(i) = the number
    /// of document starts at local positions &lt;= i (int64 [L]), from <paramref name="starts"/> in local
    /// coordinates (<see cref="DocumentBoundaries.StartsWithin"/>). Tokens i and j of the run share a document iff
    /// seg(i) = seg(j); a state entering the run at position s reaches token i &gt;= s iff seg(i) = seg(s - 1)
    /// (seg(-1) = 0); a token j reaches the state leaving at position e &gt;= j iff seg(j) = seg(e). Every reset of a
    /// chunked form or a state-passing method is one of these three comparisons.
    /// </summary>
    public static Tensor Segments(long length, IReadOnlyList<long> starts, Device device)
    {
        var counts = new long[length];
        foreach (long s in starts) counts[s]++;
        for (long i = 1; i < length; i++) counts[i] += counts[i - 1];
        return tensor(counts, dtype: int64, device: device);
    }

    /// <summary>
    /// lambda_h^e for every head h and every exponent e: [1, H, ..exponents.shape], so it scales [B, H, ...]
    /// tensors. The one place a decay power is computed (every mask, kernel and method calls it), as
    /// exp(e log lambda_h): exact 1 for lambda = 1, and any exponent tensor (positions, distances, lengths).
    /// </summary>
    public static Tensor DecayPowers(double[] decay, Tensor exponents)
    {
        using var scope = NewDisposeScope();
        long[] headShape = [-1, .. Enumerable.Repeat(1L, (int)exponents.dim())];
        var logDecay = tensor(decay, dtype: exponents.dtype, device: exponents.device).log().view(headShape); // [H,1,..]
        return (exponents.unsqueeze(0) * logDecay).exp().unsqueeze(0).MoveToOuterDisposeScope();          // [1,H,..]
    }

    /// <summary>lambda_h^e for one exponent e (e.g. a length), shaped [1, H, 1, 1] to scale [B, H, ., .] tensors.</summary>
    public static Tensor DecayPower(double[] decay, double exponent, ScalarType dtype, Device device)
    {
        using var e = tensor(exponent, dtype: dtype, device: device);
        return DecayPowers(decay, e).view(1, -1, 1, 1);
    }
}
