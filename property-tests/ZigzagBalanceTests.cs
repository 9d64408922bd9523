using FsCheck;
using FsCheck.Fluent;
using Lasp2.Reference;
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
}
