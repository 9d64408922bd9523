using FsCheck;
using FsCheck.Fluent;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// The zigzag layout balances causal softmax work: with AllGather-CP each rank scores its queries against
/// all N keys under the causal mask of its global positions, and the number of unmasked (query, key)
/// entries is the same on every rank; contiguous is not balanced for W &gt; 1 (rank t does ~(t + 1/2) C^2).
/// The mask counted is the one the methods use (Masks.CausalAllowed over SequenceLayout.Positions).
/// </summary>
public class ZigzagBalanceTests
{
    static long[] UnmaskedPerRank(int worldSize, long n, Layout layout)
    {
        using var scope = NewDisposeScope();
        var keys = arange(n, dtype: int64);
        return Enumerable.Range(0, worldSize)
            .Select(rank => Masks.CausalAllowed(SequenceLayout.Positions(n, worldSize, rank, layout), keys).sum().item<long>())
            .ToArray();
    }

    static readonly Arbitrary<(int WorldSize, int Piece)> Sizes =
        Arb.From(from w in Gen.Choose(1, 8) from piece in Gen.Choose(1, 9) select (w, piece));

    [Fact]
    public void ZigzagGivesEveryRankTheSameCausalWork() =>
        Prop.ForAll(Sizes, s =>
        {
            long n = 2L * s.WorldSize * s.Piece, c = n / s.WorldSize;
            var work = UnmaskedPerRank(s.WorldSize, n, Layout.Zigzag);
            Assert.All(work, w => Assert.Equal(work[0], w));
            // Total unmasked entries of the causal mask: N (N + 1) / 2, split W ways: C (N + 1) / 2 each.
            Assert.Equal(c * (n + 1) / 2, work[0]);
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(50));

    [Fact]
    public void ContiguousCausalWorkGrowsWithRank() =>
        Prop.ForAll(Sizes, s =>
        {
            long n = (long)s.WorldSize * s.Piece, c = s.Piece;
            var work = UnmaskedPerRank(s.WorldSize, n, Layout.Contiguous);
            // Rank t: C t C earlier keys plus C (C + 1) / 2 in its own chunk.
            for (int rank = 0; rank < s.WorldSize; rank++) Assert.Equal(rank * c * c + c * (c + 1) / 2, work[rank]);
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(50));

    /// <summary>
    /// Ring Attention's causal kernels skip a K,V block that lies wholly in the queries' future. Zigzag: every
    /// rank computes all W blocks (balanced); contiguous: rank t computes t + 1. Counted with the kernels' own
    /// skip decision (a null block result), softmax and linear alike.
    /// </summary>
    [Fact]
    public void RingComputesTheSameNumberOfBlocksOnEveryRankUnderZigzag() =>
        Prop.ForAll(Sizes, s =>
        {
            using var scope = NewDisposeScope();
            IBlockAttention[] kernels = [new OnlineSoftmax(causal: true, scale: 1.0), new LeftProduct(causal: true, [1.0])];
            foreach (var layout in new[] { Layout.Zigzag, Layout.Contiguous })
            {
                long c = s.Piece * SequenceLayout.PiecesPerRank(layout);
                var positions = MethodChecks.AllPositions(c, s.WorldSize, layout, CPU);
                var (q, kv) = (randn([1, 1, c, 2], dtype: float64), randn([1, 1, c, 2], dtype: float64));
                foreach (var kernel in kernels)
                    for (int rank = 0; rank < s.WorldSize; rank++)
                    {
                        int computed = Enumerable.Range(0, s.WorldSize)
                            .Count(owner => kernel.Forward(q, kv, kv, positions[rank], positions[owner]) is not null);
                        Assert.Equal(layout == Layout.Zigzag ? s.WorldSize : rank + 1, computed);
                    }
            }
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(30));
}
