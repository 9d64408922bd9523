using FsCheck;
using FsCheck.Fluent;
using Lasp2.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// One random linear-attention problem: small awkward shapes (batch 1..2, heads 1..4, seq 1..97,
/// d 1..16), one decay per head, a block size that often does not divide N, a feature map, a seed.
/// The tensors are made from the seed, so a shrunk counterexample replays exactly.
/// </summary>
public sealed record LinearCase(int Batch, int Heads, int Seq, int DimK, int DimV, double[] Decay, int BlockSize,
                                FeatureMap FeatureMap, int Seed)
{
    public override string ToString() =>
        $"B={Batch} H={Heads} N={Seq} Dk={DimK} Dv={DimV} decay=[{string.Join(", ", Decay)}] block={BlockSize} phi={FeatureMap} seed={Seed}";

    /// <summary>q, k [B,H,N,Dk], v and the output cotangent dO [B,H,N,Dv].</summary>
    public (Tensor Q, Tensor K, Tensor V, Tensor DO) Tensors(ScalarType dtype = ScalarType.Float64)
    {
        var generator = new Generator((ulong)Seed);
        Tensor Random(long dim) => randn([Batch, Heads, Seq, dim], dtype: dtype, generator: generator);
        return (Random(DimK), Random(DimK), Random(DimV), Random(DimV));
    }
}

/// <summary>Grouped-query softmax problem: Hkv KV heads shared by Heads = Hkv * Groups query heads.</summary>
public sealed record SoftmaxCase(int Batch, int KvHeads, int Groups, int Seq, int Dim, int Seed)
{
    public int Heads => KvHeads * Groups;

    public override string ToString() => $"B={Batch} H={Heads} Hkv={KvHeads} N={Seq} D={Dim} seed={Seed}";

    public (Tensor Q, Tensor K, Tensor V, Tensor DO) Tensors()
    {
        var generator = new Generator((ulong)Seed);
        Tensor Random(long heads) => randn([Batch, heads, Seq, Dim], dtype: float64, generator: generator);
        return (Random(Heads), Random(KvHeads), Random(KvHeads), Random(Heads));
    }
}

/// <summary>A sequence length, world size and layout that divide evenly.</summary>
public sealed record LayoutCase(int WorldSize, Layout Layout, int PieceLength, int Dim, int Seed)
{
    public int Seq => PieceLength * WorldSize * SequenceLayout.PiecesPerRank(Layout);

    public override string ToString() => $"W={WorldSize} {Layout} N={Seq} D={Dim} seed={Seed}";
}

/// <summary>FsCheck arbitraries with shrinkers toward the smallest failing shape.</summary>
public static class ReferenceArbitraries
{
    static readonly Gen<double> DecayValue =
        Gen.Frequency((2, Gen.Constant(1.0)), (1, Gen.Elements(0.999, 0.9, 0.5, 0.05)),
                      (2, Gen.Choose(1, 1000).Select(i => i / 1000.0)));

    public static Arbitrary<LinearCase> LinearCase() =>
        Arb.From(
            from batch in Gen.Choose(1, 2)
            from heads in Gen.Choose(1, 4)
            from seq in Gen.Choose(1, 97)
            from dimK in Gen.Choose(1, 16)
            from dimV in Gen.Choose(1, 16)
            from decay in Gen.ArrayOf(DecayValue, heads)
            from block in Gen.Frequency((3, Gen.Choose(1, 40)), (1, Gen.Constant(seq)), (1, Gen.Choose(seq, seq + 20)))
            from map in Gen.Elements(FeatureMap.Identity, FeatureMap.EluPlusOne, FeatureMap.Swish)
            from seed in Gen.Choose(0, int.MaxValue)
            select new LinearCase(batch, heads, seq, dimK, dimV, decay, block, map, seed),
            ShrinkLinear);

    static IEnumerable<LinearCase> ShrinkLinear(LinearCase c)
    {
        foreach (int n in Smaller(c.Seq)) yield return c with { Seq = n };
        if (c.Heads > 1) yield return c with { Heads = c.Heads - 1, Decay = c.Decay[..^1] };
        if (c.Batch > 1) yield return c with { Batch = 1 };
        foreach (int d in Smaller(c.DimK)) yield return c with { DimK = d };
        foreach (int d in Smaller(c.DimV)) yield return c with { DimV = d };
        foreach (int b in Smaller(c.BlockSize)) yield return c with { BlockSize = b };
        if (c.FeatureMap != FeatureMap.Identity) yield return c with { FeatureMap = FeatureMap.Identity };
        if (c.Decay.Any(l => l != 1.0)) yield return c with { Decay = c.Decay.Select(_ => 1.0).ToArray() };
    }

    public static Arbitrary<SoftmaxCase> SoftmaxCase() =>
        Arb.From(
            from batch in Gen.Choose(1, 2)
            from kvHeads in Gen.Choose(1, 2)
            from groups in Gen.Choose(1, 4)
            from seq in Gen.Choose(1, 97)
            from dim in Gen.Choose(1, 16)
            from seed in Gen.Choose(0, int.MaxValue)
            select new SoftmaxCase(batch, kvHeads, groups, seq, dim, seed),
            c => Smaller(c.Seq).Select(n => c with { Seq = n })
                 .Concat(Smaller(c.Dim).Select(d => c with { Dim = d }))
                 .Concat(c.Groups > 1 ? [c with { Groups = 1 }] : []));

    public static Arbitrary<LayoutCase> LayoutCase() =>
        Arb.From(
            from worldSize in Gen.Choose(1, 8)
            from layout in Gen.Elements(Layout.Contiguous, Layout.Zigzag)
            from piece in Gen.Choose(1, 12)
            from dim in Gen.Choose(1, 4)
            from seed in Gen.Choose(0, int.MaxValue)
            select new LayoutCase(worldSize, layout, piece, dim, seed),
            c => Smaller(c.PieceLength).Select(p => c with { PieceLength = p })
                 .Concat(Smaller(c.WorldSize).Select(w => c with { WorldSize = w })));

    /// <summary>Candidates below n (>= 1): 1, n/2, n-1.</summary>
    static IEnumerable<int> Smaller(int n) => new[] { 1, n / 2, n - 1 }.Where(m => m >= 1 && m < n).Distinct();
}
