using FsCheck.Xunit;
using Lasp2.Reference;
using Lasp2.Research.Kernels;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// The (gamma, m) fold (StatePrefix) in place (inclusive scan, then a shift by one) and its copying forms equal the fold
/// written as its recurrence with a separate carry: any element count, with or without decay, float64, relative error
/// &lt;= 1e-10.
/// </summary>
public class StatePrefixTests
{
    [Property(MaxTest = 60)]
    public void InPlaceFoldsEqualTheRecurrence(bool decayed, byte seed, byte length)
    {
        int count = 1 + length % 40;
        using var scope = NewDisposeScope();
        var generator = new Generator((ulong)seed);
        var states = randn([2, count, 3], dtype: float64, generator: generator);             // m_u along dim 1
        var gammas = decayed ? rand([1, count, 1], dtype: float64, generator: generator) : ones(1, count, 1, dtype: float64);
        var (prefixes, total) = Recurrence(states, gammas, forward: true);
        var (suffixes, suffixTotal) = Recurrence(states, gammas, forward: false);

        var inPlace = states.clone();
        var foldedTotal = StatePrefix.ExclusiveInPlace(inPlace, gammas, dim: 1);
        AssertClose.Tensors($"prefixes (count {count})", prefixes, inPlace);
        AssertClose.Tensors("prefix total", total, foldedTotal);
        var backward = states.clone();
        var backwardTotal = StatePrefix.ExclusiveSuffixInPlace(backward, gammas, dim: 1);
        AssertClose.Tensors($"suffixes (count {count})", suffixes, backward);
        AssertClose.Tensors("suffix total", suffixTotal, backwardTotal);
        // The copying forms are the in-place ones on a copy, and leave their input alone.
        var original = states.clone();
        AssertClose.Tensors("Exclusive", prefixes, StatePrefix.Exclusive(states, gammas, dim: 1).Prefixes);
        AssertClose.Tensors("ExclusiveSuffix", suffixes, StatePrefix.ExclusiveSuffix(states, gammas, dim: 1).Suffixes);
        AssertClose.Tensors("input", original, states, 0);
    }

    /// <summary>
    /// P_0 = 0, P_{u+1} = gamma_u P_u + m_u (forward); G_last = 0, G_{u-1} = gamma_u G_u + dm_u (backward), one element at a
    /// time; the totals are the values after the last step.
    /// </summary>
    static (Tensor Folded, Tensor Total) Recurrence(Tensor states, Tensor gammas, bool forward)
    {
        long count = states.shape[1];
        var folded = new Tensor[count];
        var carry = zeros_like(states.select(1, 0));
        foreach (long u in forward ? Enumerable.Range(0, (int)count).Select(i => (long)i) : Enumerable.Range(0, (int)count).Select(i => count - 1 - i))
        {
            folded[u] = carry;
            carry = (gammas.select(1, u) * carry).Plus(states.select(1, u));
        }
        return (stack(folded, 1), carry);
    }
}
