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
        CheckGammas(states, gammas, dim);
        using var scope = NewDisposeScope();
        if (AllOne(gammas))
        {
            // No decay: P = cumsum(m) - m, one batched call instead of a step per element.
            var inclusive = states.cumsum(dim);
            var sum = inclusive.select(dim, states.shape[dim] - 1).clone();
            return (inclusive.SubtractInPlace(states).MoveToOuterDisposeScope(), sum.MoveToOuterDisposeScope());
        }
        var accumulated = zeros_like(states.select(dim, 0));
        var prefixes = new List<Tensor>();
        for (long u = 0; u < states.shape[dim]; u++)
        {
            prefixes.Add(accumulated);
            // P_{u+1} = gamma_u P_u + m_u
            accumulated = (gammas.select(dim, u) * accumulated).Plus(states.select(dim, u));
        }
        return (stack(prefixes, dim).MoveToOuterDisposeScope(), accumulated.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Exclusive decayed suffix along <paramref name="dim"/> (the adjoint of <see cref="Exclusive"/>):
    /// G_last = 0, G_{u-1} = gamma_u G_u + dm_u, i.e. G_t = sum_{u&gt;t} (prod_{t&lt;w&lt;u} gamma_w) dm_u.
    /// Returns the suffixes and the total sum_u (prod_{w&lt;u} gamma_w) dm_u (the gradient of the state
    /// entering the first element).
    /// </summary>
    public static (Tensor Suffixes, Tensor Total) ExclusiveSuffix(Tensor grads, Tensor gammas, int dim)
    {
        CheckGammas(grads, gammas, dim);
        using var scope = NewDisposeScope();
        long count = grads.shape[dim];
        if (AllOne(gammas))
        {
            // No decay: G = sum(dm) - cumsum(dm), one batched call instead of a step per element.
            var inclusive = grads.cumsum(dim);
            var sum = inclusive.select(dim, count - 1).clone();
            return (inclusive.neg_().PlusInPlace(sum.unsqueeze(dim)).MoveToOuterDisposeScope(), sum.MoveToOuterDisposeScope());
        }
        var accumulated = zeros_like(grads.select(dim, 0));
        var suffixes = new Tensor[count];
        for (long u = count - 1; u >= 0; u--)
        {
            suffixes[u] = accumulated;
            // G_{u-1} = gamma_u G_u + dm_u
            accumulated = (gammas.select(dim, u) * accumulated).Plus(grads.select(dim, u));
        }
        return (stack(suffixes, dim).MoveToOuterDisposeScope(), accumulated.MoveToOuterDisposeScope());
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
