using FsCheck.Xunit;
using Lasp2.Reference;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>Sharding over W ranks and back, for the contiguous and zigzag layouts.</summary>
[Properties(Arbitrary = [typeof(ReferenceArbitraries)], MaxTest = 100)]
public class LayoutTests
{
    [Property]
    public void ShardThenUnshardIsTheIdentity(LayoutCase c)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)c.Seed);   // using: alive until randn returned
        var x = randn([2, 3, c.Seq, c.Dim], dtype: float64, generator: generator);
        var shards = SequenceLayout.Shard(x, c.WorldSize, c.Layout);
        Assert.Equal(c.WorldSize, shards.Length);
        Assert.All(shards, s => Assert.Equal(c.Seq / c.WorldSize, s.shape[2]));
        AssertClose.Tensors("unshard(shard(x))", x, SequenceLayout.Unshard(shards, c.Layout), relativeTolerance: 0.0);
    }

    /// <summary>Each rank's shard holds exactly the tokens its Positions name, and the ranks cover 0..N-1 once.</summary>
    [Property]
    public void ShardsHoldTheirPositionsAndCoverTheSequenceOnce(LayoutCase c)
    {
        using var scope = NewDisposeScope();
        var tokens = arange(c.Seq, dtype: float64).view(1, 1, -1, 1);
        var covered = new List<long>();
        for (int rank = 0; rank < c.WorldSize; rank++)
        {
            var positions = SequenceLayout.Positions(c.Seq, c.WorldSize, rank, c.Layout);
            var shard = SequenceLayout.ShardOf(tokens, c.WorldSize, rank, c.Layout);
            Assert.Equal(positions.to(float64).data<double>().ToArray(), shard.flatten().data<double>().ToArray());
            covered.AddRange(positions.data<long>().ToArray());
        }
        Assert.Equal(Enumerable.Range(0, c.Seq).Select(i => (long)i), covered.Order());
    }

    /// <summary>Every rank's pieces' document starts, put back at their pieces' global offsets, are the global starts, once.</summary>
    [Property]
    public void PieceDocumentStartsCoverTheGlobalStartsOnce(LayoutCase c)
    {
        var cuts = Enumerable.Range(1, c.Seq - 1).Where(i => (i * 7 + c.Seed) % 5 == 0).Select(i => (long)i).ToArray();
        var documents = DocumentCuts.Boundaries(c.Seq, cuts);
        var found = new List<long>();
        for (int rank = 0; rank < c.WorldSize; rank++)
        {
            var pieces = SequenceLayout.Pieces(c.Seq, c.WorldSize, rank, c.Layout);
            var starts = SequenceLayout.PieceDocumentStarts(documents, c.WorldSize, rank, c.Layout);
            Assert.Equal(pieces.Count, starts.Length);
            for (int slot = 0; slot < pieces.Count; slot++)
                found.AddRange(starts[slot].Select(s => { Assert.InRange(s, 0, pieces[slot].Length - 1); return pieces[slot].Start + s; }));
        }
        Assert.Equal(documents.CuSeqlens.SkipLast(1), found.Order());
    }

    [Fact]
    public void ZigzagPieceDocumentStartsAreLocal()
    {
        // N = 16, W = 4 zigzag, documents [0, 3), [3, 12), [12, 13), [13, 16): rank 1 holds tokens 2..3 and 12..13.
        var documents = DocumentBoundaries.FromCuSeqlens([0, 3, 12, 13, 16], 16);
        var starts = SequenceLayout.PieceDocumentStarts(documents, 4, 1, Layout.Zigzag);
        Assert.Equal([1L], starts[0]);
        Assert.Equal([0L, 1], starts[1]);
    }

    [Fact]
    public void ZigzagRankHoldsPiecesRAndTwoWMinusOneMinusR()
    {
        // N = 16, W = 4: 8 pieces of 2 tokens; rank 1 holds pieces 1 and 6.
        var pieces = SequenceLayout.Pieces(16, 4, 1, Layout.Zigzag);
        Assert.Equal([new Piece(2, 2), new Piece(12, 2)], pieces);
    }
}
