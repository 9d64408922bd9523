using Lasp2.Reference;
using Lasp2.Research.Comm;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>The argument checks every sequence-parallel method runs before it communicates.</summary>
public static class MethodChecks
{
    /// <summary>
    /// Checks the local shards q [B,H,C,Dk], k [B,Hkv,C,Dk], v [B,Hkv,C,Dv] and the options against what
    /// <paramref name="method"/> supports; returns the per-head decay (1 where none is given). Throws an
    /// <see cref="ArgumentException"/> naming the parameter and the valid range.
    /// </summary>
    public static double[] Validate(ISequenceParallelAttention method, IProcessGroup group,
                                    Tensor q, Tensor k, Tensor v, AttentionOptions options)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(options);
        var supports = method.Supports;
        Guards.AttentionInputs(q, k, v, allowGroupedKv: supports.GroupedKv);
        if (options.Causal ? !supports.Causal : !supports.Unmasked)
            throw new ArgumentException(
                $"{method.Name} does not support {(options.Causal ? "the causal mask" : "unmasked attention")}.", nameof(options));
        if (!supports.Layouts.Contains(options.Layout))
            throw new ArgumentException(
                $"{method.Name} does not support layout {options.Layout}; supported: {string.Join(", ", supports.Layouts)}.",
                nameof(options));
        Guards.AtLeast(options.BlockSize, 1, nameof(options.BlockSize));
        var decay = Guards.Decay(options.Decay, q.shape[1]);
        bool decayed = decay.Any(lambda => lambda != 1.0);
        if (decayed && !supports.Decay)
            throw new ArgumentException($"{method.Name} does not support decay; pass Decay = null.", nameof(options));
        if (decayed && !options.Causal)
            throw new ArgumentException("decay requires the causal mask (it weights past tokens by distance).", nameof(options));
        if (options.Gates is { } gates)
        {
            if (!method.Recurrences.Contains(gates.Recurrence))
                throw new ArgumentException(
                    $"{method.Name} does not support the {gates.Recurrence.Name} recurrence; supported: " +
                    $"{(method.Recurrences.Count == 0 ? "none (only Decay)" : string.Join(", ", method.Recurrences.Select(r => r.Name)))}.",
                    nameof(options));
            if (options.Decay is not null)
                throw new ArgumentException("give Decay or Gates, not both (a constant decay is Gates.ConstantDecay).", nameof(options));
            if (!options.Causal)
                throw new ArgumentException("gated recurrences require the causal mask.", nameof(options));
        }
        SequenceLayout.CheckDivisible(q.shape[2] * group.WorldSize, group.WorldSize, options.Layout);
        Documents(method, options, q.shape[2] * group.WorldSize);
        if (method.Unsupported(group.WorldSize, q.shape[1], k.shape[1]) is { } reason)
            throw new ArgumentException(reason + ".", nameof(q));
        return decay;
    }

    /// <summary>
    /// Checks <see cref="AttentionOptions.Documents"/> against the method and the global length N: the method must
    /// support documents under this mask, and the boundaries must cover exactly N tokens.
    /// </summary>
    public static void Documents(ISequenceParallelAttention method, AttentionOptions options, long sequenceLength)
    {
        if (options.Documents is not { } documents) return;
        if (!method.Supports.SupportsDocuments(options.Causal))
            throw new ArgumentException(
                $"{method.Name} does not support packed documents{(options.Causal ? "" : " without the causal mask")}; " +
                $"supported: {method.Supports.Documents}.", nameof(options));
        documents.CheckLength(sequenceLength, nameof(options.Documents));
    }

    /// <summary>Global positions of every rank's shard, rank order: int64 [C] each.</summary>
    public static Tensor[] AllPositions(long localLength, int worldSize, Layout layout, Device device) =>
        Enumerable.Range(0, worldSize)
                  .Select(rank => SequenceLayout.Positions(localLength * worldSize, worldSize, rank, layout, device))
                  .ToArray();
}
