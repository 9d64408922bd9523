using FsCheck;
using FsCheck.Fluent;
using Lasp2.Reference;
using Lasp2.Research.Verification;
using TorchSharp;

namespace Lasp2.PropertyTests;

/// <summary>
/// One random distributed problem: W in 1..8 ranks, each holding 1..6 tokens per piece (so N = piece * W
/// or piece * 2W, almost never a multiple of the block), awkward head dims, mask, decay, layout, block, seed.
/// </summary>
public sealed record DistributedCase(int Batch, int Heads, int PieceLength, int DimK, int DimV, int WorldSize,
                                     bool Causal, double Decay, Layout Layout, int BlockSize, int Seed)
{
    public int Seq => PieceLength * WorldSize * SequenceLayout.PiecesPerRank(Layout);

    public DistributedCheckConfig Config(string method = "lasp2") =>
        new(method, WorldSize, Causal, Decay, Layout, torch.ScalarType.Float64, Batch, Heads, Heads, Seq, DimK, DimV, BlockSize, Seed);

    public override string ToString() =>
        $"W={WorldSize} {Layout} {(Causal ? "causal" : "no mask")} decay={Decay} B={Batch} H={Heads} N={Seq} Dk={DimK} Dv={DimV} block={BlockSize} seed={Seed}";
}

/// <summary>FsCheck arbitraries for <see cref="DistributedCase"/>, shrinking toward W = 1 and short pieces.</summary>
public static class DistributedArbitraries
{
    public static Arbitrary<DistributedCase> DistributedCase() =>
        Arb.From(
            from batch in Gen.Choose(1, 2)
            from heads in Gen.Choose(1, 3)
            from piece in Gen.Choose(1, 6)
            from dimK in Gen.Choose(1, 5)
            from dimV in Gen.Choose(1, 5)
            from worldSize in Gen.Choose(1, 8)
            from causal in Gen.Frequency((3, Gen.Constant(true)), (1, Gen.Constant(false)))
            from decay in Gen.Elements(1.0, 0.999, 0.9, 0.5, 0.05)
            from layout in Gen.Elements(Layout.Contiguous, Layout.Zigzag)
            from block in Gen.Choose(1, 9)
            from seed in Gen.Choose(0, int.MaxValue)
            select new DistributedCase(batch, heads, piece, dimK, dimV, worldSize, causal, causal ? decay : 1.0, layout, block, seed),
            Shrink);

    static IEnumerable<DistributedCase> Shrink(DistributedCase c)
    {
        if (c.WorldSize > 1) yield return c with { WorldSize = c.WorldSize / 2 };
        if (c.WorldSize > 1) yield return c with { WorldSize = c.WorldSize - 1 };
        if (c.PieceLength > 1) yield return c with { PieceLength = c.PieceLength - 1 };
        if (c.Layout == Layout.Zigzag) yield return c with { Layout = Layout.Contiguous };
        if (c.Batch > 1) yield return c with { Batch = 1 };
        if (c.Heads > 1) yield return c with { Heads = c.Heads - 1 };
        if (c.DimK > 1) yield return c with { DimK = 1 };
        if (c.DimV > 1) yield return c with { DimV = 1 };
        if (c.BlockSize > 1) yield return c with { BlockSize = c.BlockSize - 1 };
        if (c.Decay != 1.0) yield return c with { Decay = 1.0 };
    }
}
