using Lasp2.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Kernels;

/// <summary>
/// The (gamma, m) fold shared by every state-passing method (LASP-2, LASP-1, the chunked kernel's
/// blocks): an associative scan over pairs (gamma_u, m_u) with
/// (gamma_a, m_a) o (gamma_b, m_b) = (gamma_b gamma_a, gamma_b m_a + m_b)
/// (docs/algorithms.md, "The (gamma, m) scan"). m_u is the zero-start state summary of element u
/// (a block, a rank's shard or a zigzag piece) and gamma_u the decay across it (lambda^length).
/// Forward uses the exclusive prefix, backward the exclusive suffix of the gradients. The piece order the
/// scan runs in is <see cref="SequenceLayout.ToSequenceOrder"/>'s.
/// </summary>
public static class StatePrefix
{
    /// <summary>
    /// Exclusive decayed prefix along <paramref name="dim"/>: prefix_0 = 0,
    /// prefix_{u+1} = gamma_u prefix_u + m_u, i.e. P_t = sum_{u&lt;t} (prod_{u&lt;w&lt;t} gamma_w) m_u.
    /// <paramref name="gammas"/> has the size of <paramref name="states"/> along dim and broadcasts
    /// elsewhere. Returns the prefixes (same shape as states) and the total (the state after the last
    /// element, dim removed).
    /// </summary>
    public static (Tensor Prefixes, Tensor Total) Exclusive(Tensor states, Tensor gammas, int dim)
    {
        using var scope = NewDisposeScope();
        var prefixes = states.clone();
        var total = ExclusiveInPlace(prefixes, gammas, dim);
        return (prefixes.MoveToOuterDisposeScope(), total.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// <see cref="Exclusive"/> written over <paramref name="states"/> (which then holds the prefixes); returns the total.
    /// One pass of in-place updates per element, then a shift by one: no temporary of the states' size (the chunked
    /// kernel folds its [B,H,nb,Dk,Dv] block states so). Why not cumsum: along this middle dimension it is libtorch's slow
    /// path (measured, [1,8,1024,64,64] fp32, one thread: cumsum in chunks of 32 blocks, no fresh pages, 272 ms; this fold 33 ms).
    /// </summary>
    public static Tensor ExclusiveInPlace(Tensor states, Tensor gammas, int dim)
    {
        CheckGammas(states, gammas, dim);
        using var scope = NewDisposeScope();
        long count = states.shape[dim];
        bool decayed = !AllOne(gammas);
        // I_u = gamma_u I_{u-1} + m_u (I_0 = m_0): the inclusive prefix, written over m
        for (long u = 1; u < count; u++)
            AddDecayed(states.narrow(dim, u, 1), states.narrow(dim, u - 1, 1), decayed ? gammas.narrow(dim, u, 1) : null);
        var total = states.select(dim, count - 1).clone();
        // P_u = I_{u-1}, P_0 = 0: shifted up by one, from the end
        for (long u = count - 1; u > 0; u--) states.narrow(dim, u, 1).copy_(states.narrow(dim, u - 1, 1));
        states.narrow(dim, 0, 1).Fill(0);                   // not zero_: autograd cannot differentiate the aten::zeros it records
        return total.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Exclusive decayed suffix along <paramref name="dim"/> (the adjoint of <see cref="Exclusive"/>):
    /// G_last = 0, G_{u-1} = gamma_u G_u + dm_u, i.e. G_t = sum_{u&gt;t} (prod_{t&lt;w&lt;u} gamma_w) dm_u.
    /// Returns the suffixes and the total sum_u (prod_{w&lt;u} gamma_w) dm_u (the gradient of the state
    /// entering the first element).
    /// </summary>
    public static (Tensor Suffixes, Tensor Total) ExclusiveSuffix(Tensor grads, Tensor gammas, int dim)
    {
        using var scope = NewDisposeScope();
        var suffixes = grads.clone();
        var total = ExclusiveSuffixInPlace(suffixes, gammas, dim);
        return (suffixes.MoveToOuterDisposeScope(), total.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// <see cref="ExclusiveSuffix"/> written over <paramref name="grads"/> (which then holds the suffixes); returns the
    /// total. In place from the last element back, as <see cref="ExclusiveInPlace"/>.
    /// </summary>
    public static Tensor ExclusiveSuffixInPlace(Tensor grads, Tensor gammas, int dim)
    {
        CheckGammas(grads, gammas, dim);
        using var scope = NewDisposeScope();
        long count = grads.shape[dim];
        bool decayed = !AllOne(gammas);
        // J_u = gamma_u J_{u+1} + dm_u (J_last = dm_last): the inclusive suffix, written over dm
        for (long u = count - 2; u >= 0; u--)
            AddDecayed(grads.narrow(dim, u, 1), grads.narrow(dim, u + 1, 1), decayed ? gammas.narrow(dim, u, 1) : null);
        var total = grads.select(dim, 0).clone();
        // G_u = J_{u+1}, G_last = 0: shifted down by one, from the start
        for (long u = 0; u < count - 1; u++) grads.narrow(dim, u, 1).copy_(grads.narrow(dim, u + 1, 1));
        grads.narrow(dim, count - 1, 1).Fill(0);
        return total.MoveToOuterDisposeScope();
    }

    /// <summary>target += gamma carried (target += carried when gamma is null), in place.</summary>
    static void AddDecayed(Tensor target, Tensor carried, Tensor? gamma)
    {
        if (gamma is null) target.PlusInPlace(carried);
        else target.addcmul_(carried, gamma, Scalars.One);
    }

    static bool AllOne(Tensor gammas)
    {
        using var scope = NewDisposeScope();
        return gammas.eq(ones(1, dtype: gammas.dtype, device: gammas.device)).all().item<bool>();
    }

    static void CheckGammas(Tensor states, Tensor gammas, int dim)
    {
        if (dim < 0 || dim >= states.dim())
            throw new ArgumentOutOfRangeException(nameof(dim), dim, $"dim must be in [0, {states.dim() - 1}].");
        if (states.shape[dim] < 1)
            throw new ArgumentException($"states has no element along dim {dim}; the fold needs at least one.", nameof(states));
        if (gammas.dim() != states.dim() || gammas.shape[dim] != states.shape[dim])
            throw new ArgumentException(
                $"gammas {Guards.Shape(gammas)} must have {states.dim()} dimensions and size {states.shape[dim]} along dim {dim} " +
                $"(states {Guards.Shape(states)}).", nameof(gammas));
    }
}
