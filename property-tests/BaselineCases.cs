using FsCheck;
using FsCheck.Fluent;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Verification;
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>
/// Random distributed problems a given method supports: W in 1..8, a supported layout and mask, decay
/// where supported (causal only), grouped KV heads where supported, Ulysses head counts divisible by W,
/// small awkward shapes (pieces of 1..6 tokens, d 1..6, Dk != Dv, block sizes that do not divide shards).
/// </summary>
public static class BaselineCases
{
    /// <summary>Every registered method's name: the equality and communication properties run over the registry.</summary>
    public static TheoryData<string> Registered() => new(MethodRegistry.Names);

    /// <summary>Generator of configurations that <paramref name="method"/> supports.</summary>
    public static Arbitrary<DistributedCheckConfig> For(string method) => Arb.From(Generate(method), Shrink);

    static Gen<DistributedCheckConfig> Generate(string name)
    {
        var method = MethodRegistry.Get(name);
        var supports = method.Supports;
        // a method that shards heads (Ulysses) refuses one head on two ranks: give it W-multiple head counts
        bool shardsHeads = method.Unsupported(2, 1, 1) is not null;
        var masks = new[] { true, false }.Where(causal => causal ? supports.Causal : supports.Unmasked).ToArray();
        return
            from worldSize in Gen.Choose(1, 8)
            from layout in Gen.Elements(supports.Layouts.ToArray())
            from causal in Gen.Elements(masks)
            from piece in Gen.Choose(1, 6)
            from batch in Gen.Choose(1, 2)
            from kvMultiple in Gen.Choose(1, shardsHeads ? 1 : 2)
            from groups in Gen.Choose(1, supports.GroupedKv ? 3 : 1)
            from dimK in Gen.Choose(1, 6)
            from dimV in Gen.Choose(1, 6)
            from decay in Gen.Elements(supports.Decay && causal ? [1.0, 0.9, 0.5] : new[] { 1.0 })
            from block in Gen.Choose(1, 5)
            from seed in Gen.Choose(0, int.MaxValue)
            let kvHeads = shardsHeads ? worldSize * kvMultiple : kvMultiple
            select new DistributedCheckConfig(name, worldSize, causal, decay, layout, TorchSharp.torch.ScalarType.Float64,
                batch, kvHeads * groups, kvHeads, piece * worldSize * SequenceLayout.PiecesPerRank(layout), dimK, dimV, block, seed);
    }

    /// <summary>Toward W = 1 (while the method supports the head counts on W / 2 ranks), one token per piece, d = 1, one batch row.</summary>
    static IEnumerable<DistributedCheckConfig> Shrink(DistributedCheckConfig c)
    {
        int pieces = c.Seq / (c.WorldSize * SequenceLayout.PiecesPerRank(c.Layout));
        if (pieces > 1) yield return c with { Seq = c.Seq / pieces };
        if (c.WorldSize > 1 && MethodRegistry.Get(c.Method).Unsupported(c.WorldSize / 2, c.Heads, c.KvHeads) is null)
            yield return c with { WorldSize = c.WorldSize / 2, Seq = c.Seq / c.WorldSize * (c.WorldSize / 2) };
        if (c.Batch > 1) yield return c with { Batch = 1 };
        if (c.DimK > 1) yield return c with { DimK = 1 };
        if (c.DimV > 1) yield return c with { DimV = 1 };
        if (c.Decay != 1.0) yield return c with { Decay = 1.0 };
    }
}
