using Lasp2.Reference;
using static TorchSharp.torch;

namespace Lasp2.Research.Model;

/// <summary>
/// Rotary position embedding (RoPE) of the softmax layers: within each head of dimension d, the pair
/// (x_i, x_{i+d/2}) of the token at position p is rotated by the angle p * theta^(-2i/d).
/// p must be the token's GLOBAL position: a zigzag shard holds two distant pieces, so a local index would
/// rotate the second piece by the wrong angles (and every shard but the first, in any layout).
/// </summary>
public static class Rope
{
    /// <summary>
    /// cos and sin of the angles for <paramref name="positions"/> (int64 [C], global), each [C, d/2] in
    /// <paramref name="dtype"/>; the angles are formed in float64 so every rank computes the same bits.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) Tables(Tensor positions, int headDim, double theta, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var frequencies = Enumerable.Range(0, headDim / 2).Select(i => Math.Pow(theta, -2.0 * i / headDim)).ToArray();
        // angle[p, i] = p * theta^(-2i/d)
        var angles = positions.to(ScalarType.Float64, positions.device).unsqueeze(1)
                     * tensor(frequencies, device: positions.device).unsqueeze(0);     // [C, d/2]
        return (angles.cos().to(dtype).MoveToOuterDisposeScope(), angles.sin().to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>x [B, H, C, d] rotated: (x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos) with x1, x2 its two halves.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[3] / 2;
        var (x1, x2) = (x.narrow(3, 0, half), x.narrow(3, half, half));                 // [B,H,C,d/2]
        return cat([(x1 * cos).Minus(x2 * sin), (x1 * sin).Plus(x2 * cos)], 3);          // [B,H,C,d]
    }
}
