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
        var logDecay = tensor(decay, dtype: dtype, device: device).log().view(-1, 1, 1); // [H,1,1]
        var mask = (distance.unsqueeze(0) * logDecay).exp() * Causal(n, dtype, device);  // [H,N,N]
        return mask.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Causal permission for tokens at arbitrary global positions: allowed[i, j] = queryPositions[i] >=
    /// keyPositions[j] (bool [Nq, Nk]). Used for shards whose positions are not contiguous (zigzag).
    /// </summary>
    public static Tensor CausalAllowed(Tensor queryPositions, Tensor keyPositions) =>
        queryPositions.unsqueeze(1) >= keyPositions.unsqueeze(0);

    /// <summary>lambda_h^e for a per-head decay, shaped [1, H, 1, 1] to scale [B, H, ., .] tensors.</summary>
    public static Tensor DecayPower(double[] decay, double exponent, ScalarType dtype, Device device) =>
        tensor(decay.Select(l => Math.Pow(l, exponent)).ToArray(), dtype: dtype, device: device).view(1, -1, 1, 1);
}
