using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using Lasp2.Research.Verification;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// Regression properties for the traps of the public implementation (docs/algorithms.md, "Traps of the public implementation"), each phrased
/// so that the trap would fail it: a token that does not see itself, a future token leaking (also inside
/// the diagonal block), an unmasked kernel that is not the full sum, a rank-ordered prefix on zigzag shards,
/// tail blocks left uninitialised (blocking collectives: OverlapTests). Plus the bad-input and unequal-shard contracts.
/// Float64; "exactly 0" means bit-exact zeros (masked terms are multiplied by 0, never approximated).
/// </summary>
public class Lasp2TrapTests
{
    static MethodRun RunOn(int worldSize, Tensor q, Tensor k, Tensor v, Tensor dO, AttentionOptions options) =>
        ProcessGroups.RunInProcess(worldSize,
            group => DistributedChecks.RunMethod(group, MethodRegistry.Get("lasp2"), q, k, v, dO, options), threadsPerRank: 1)[0];

    /// <summary>Random float64 q, k, v, dO [B,H,N,.] of a case, from its seed.</summary>
    internal static (Tensor Q, Tensor K, Tensor V, Tensor DO) Inputs(DistributedCase c)
    {
        var generator = new Generator((ulong)c.Seed);
        Tensor Random(long dim) => randn([c.Batch, c.Heads, c.Seq, dim], dtype: float64, generator: generator);
        return (Random(c.DimK), Random(c.DimK), Random(c.DimV), Random(c.DimV));
    }

    /// <summary>Zero everywhere but token <paramref name="token"/> along the sequence.</summary>
    static Tensor OnlyAt(Tensor x, long token)
    {
        var mask = zeros(1, 1, x.shape[2], 1, dtype: x.dtype);
        mask[0, 0, token, 0] = tensor(1.0, dtype: x.dtype);
        return x * mask;
    }

    static void AssertExactlyZero(string name, Tensor x) =>
        Assert.True(x.numel() == 0 || x.abs().max().item<double>() == 0.0, $"{name} must be exactly 0; max |x| = {(x.numel() == 0 ? 0 : x.abs().max().item<double>())}");

    static Arbitrary<(DistributedCase Case, int Token)> CaseAndToken(bool causal) =>
        (from c in DistributedArbitraries.DistributedCase().Generator
         let fixedCase = causal ? c with { Causal = true } : c with { Causal = false, Decay = 1.0 }
         from token in Gen.Choose(0, fixedCase.Seq - 1)
         select (fixedCase, token)).ToArbitrary();

    [Property(MaxTest = 25)]
    public Property EveryTokenSeesItselfAndNoFutureTokenEvenInsideTheDiagonalBlock() =>
        Prop.ForAll(CaseAndToken(causal: true), x =>
        {
            var (c, j) = x;
            using var scope = NewDisposeScope();
            var (q, k, v, dO) = Inputs(c);
            var options = c.Config().Options;
            // Forward: only token j carries a value, so o_i = 0 for i < j and o_j = (q_j . k_j) v_j.
            var run = RunOn(c.WorldSize, q, k, OnlyAt(v, j), dO, options);
            AssertExactlyZero($"o before token {j} ({c})", run.O.narrow(2, 0, j));
            var itself = (q.narrow(2, j, 1) * k.narrow(2, j, 1)).sum(-1, keepdim: true) * v.narrow(2, j, 1);
            AssertClose.Tensors($"o_{j} = (q_j . k_j) v_j ({c})", itself, run.O.narrow(2, j, 1), Compare.Float64Tolerance);
            // Backward: only o_j is differentiated, so no later token gets a gradient and only q_j does.
            var back = RunOn(c.WorldSize, q, k, v, OnlyAt(dO, j), options);
            AssertExactlyZero($"dK after token {j} ({c})", back.DK.narrow(2, j + 1, c.Seq - j - 1));
            AssertExactlyZero($"dV after token {j} ({c})", back.DV.narrow(2, j + 1, c.Seq - j - 1));
            AssertExactlyZero($"dQ away from token {j} ({c})", back.DQ - OnlyAt(back.DQ, j));
        });

    [Property(MaxTest = 15)]
    public Property UnmaskedMeansTheFullSum() =>
        Prop.ForAll(CaseAndToken(causal: false), x =>
        {
            var (c, j) = x;
            using var scope = NewDisposeScope();
            var (q, k, v, dO) = Inputs(c);
            // Only token j carries a value: every token i, before or after j, gets (q_i . k_j) v_j.
            var run = RunOn(c.WorldSize, q, k, OnlyAt(v, j), dO, c.Config().Options);
            var expected = q.matmul(k.narrow(2, j, 1).transpose(-2, -1)) * v.narrow(2, j, 1);   // [B,H,N,Dv]
            AssertClose.Tensors($"o_i = (q_i . k_{j}) v_{j} for all i ({c})", expected, run.O, Compare.Float64Tolerance);
        });

    /// <summary>Gathered pieces are folded in global sequence order: zigzag piece starts come out increasing.</summary>
    [Property(MaxTest = 20)]
    public Property ZigzagPiecesAreFoldedInSequenceOrder() =>
        Prop.ForAll(Gen.Choose(1, 8).ToArbitrary(), Gen.Choose(1, 5).ToArbitrary(), (worldSize, piece) =>
        {
            long n = 2L * worldSize * piece;
            var starts = Enumerable.Range(0, worldSize)
                .SelectMany(rank => SequenceLayout.Pieces(n, worldSize, rank, Layout.Zigzag).Select(p => (double)p.Start)).ToArray();
            using var gathered = tensor(starts, dtype: float64).view(worldSize, 2, 1);           // [W, P, 1] rank order
            using var ordered = SequenceLayout.ToSequenceOrder(gathered, Layout.Zigzag);
            Assert.Equal(Enumerable.Range(0, 2 * worldSize).Select(i => (double)(i * piece)), ordered.data<double>().ToArray());
        });

    [Property(MaxTest = 15, Arbitrary = [typeof(DistributedArbitraries)])]
    public void ZigzagGivesTheSameGlobalResultAsContiguous(DistributedCase c)
    {
        using var scope = NewDisposeScope();
        var zigzag = c with { Layout = Layout.Zigzag, WorldSize = Math.Max(2, c.WorldSize) };
        var (q, k, v, dO) = Inputs(zigzag);
        var a = RunOn(zigzag.WorldSize, q, k, v, dO, zigzag.Config().Options);
        var b = RunOn(zigzag.WorldSize, q, k, v, dO, zigzag.Config().Options with { Layout = Layout.Contiguous });
        AssertClose.Tensors("O", b.O, a.O, Compare.Float64Tolerance);
        AssertClose.Tensors("dQ", b.DQ, a.DQ, Compare.Float64Tolerance);
        AssertClose.Tensors("dK", b.DK, a.DK, Compare.Float64Tolerance);
        AssertClose.Tensors("dV", b.DV, a.DV, Compare.Float64Tolerance);
    }

    /// <summary>Shard lengths that are not a multiple of the block (and blocks longer than the shard) leave nothing out.</summary>
    [Property(MaxTest = 20)]
    public Property AnyTailLengthIsComputed() =>
        Prop.ForAll(
            (from worldSize in Gen.Choose(1, 4)
             from shard in Gen.Choose(2, 13)
             from block in Gen.Elements(shard - 1, shard + 1, shard / 2 + 1, 3, 5)
             from causal in Gen.Elements(true, false)
             from seed in Gen.Choose(0, int.MaxValue)
             select new DistributedCase(1, 2, shard, 3, 2, worldSize, causal, causal ? 0.9 : 1.0, Layout.Contiguous, Math.Max(1, block), seed))
            .ToArbitrary(),
            c =>
            {
                using var scope = NewDisposeScope();
                var (tensors, _) = DistributedEqualsReferenceTests.Run(c.Config());
                DistributedEqualsReferenceTests.AssertEqualsReference(c.Config(), tensors);   // NaN or garbage fails here
            });

    /// <summary>Contiguous shards of different lengths are exact too: each piece's decay gamma travels with its state.</summary>
    [Property(MaxTest = 10, Arbitrary = [typeof(DistributedArbitraries)])]
    public void UnequalShardLengthsUseTheGatheredDecays(DistributedCase c)
    {
        using var scope = NewDisposeScope();
        int worldSize = Math.Max(2, c.WorldSize);
        var lengths = Enumerable.Range(1, worldSize).ToArray();                                // rank r holds r + 1 tokens
        var config = c with { Layout = Layout.Contiguous, PieceLength = 1, WorldSize = 1 };
        var (q, k, v, dO) = Inputs(config with { PieceLength = lengths.Sum() });
        var options = config.Config().Options;
        var shards = ProcessGroups.RunInProcess(worldSize, group =>
        {
            long start = lengths.Take(group.Rank).Sum(), length = lengths[group.Rank];
            var leaves = new[] { q, k, v }.Select(x => x.narrow(2, start, length).detach().clone().requires_grad_(true)).ToArray();
            var o = MethodRegistry.Get("lasp2").Forward(group, leaves[0], leaves[1], leaves[2], options);
            o.backward([dO.narrow(2, start, length)]);
            return new[] { o.detach(), leaves[0].grad!, leaves[1].grad!, leaves[2].grad! };
        }, threadsPerRank: 1);
        var (expected, grads) = Autograd.ForwardBackward(
            x => LinearAttention.Quadratic(x[0], x[1], x[2], config.Causal, config.Config().HeadDecays()), dO, q, k, v);
        var reference = new[] { expected, grads[0], grads[1], grads[2] };
        string[] names = ["O", "dQ", "dK", "dV"];
        for (int i = 0; i < 4; i++)
            AssertClose.Tensors($"{names[i]} with shard lengths 1..{worldSize}", reference[i], cat(shards.Select(s => s[i]).ToList(), 2),
                                Compare.Float64Tolerance);
    }

    [Fact]
    public void BadInputsFailClearlyOnEveryRank()
    {
        using var scope = NewDisposeScope();
        var method = new Lasp2Attention();
        var q = randn(1, 2, 3, 4, dtype: float64);
        using (var single = ProcessGroups.Single())
        {
            var zigzag = Assert.Throws<ArgumentException>(() => method.Forward(single, q, q, q, new AttentionOptions(Layout: Layout.Zigzag)));
            Assert.Equal("q", zigzag.ParamName);
            var decay = Assert.Throws<ArgumentException>(() => method.Forward(single, q, q, q, new AttentionOptions(Causal: false, Decay: [0.9, 0.9])));
            Assert.Equal("decay", decay.ParamName);
            var block = Assert.Throws<ArgumentOutOfRangeException>(() => method.Forward(single, q, q, q, new AttentionOptions(BlockSize: 0)));
            Assert.Equal("blockSize", block.ParamName);
        }
        var divisible = Assert.Throws<RankFailedException>(() => DistributedChecks.RunInProcess(new DistributedCheckConfig(WorldSize: 2, Seq: 7)));
        Assert.Contains("not divisible by worldSize = 2", divisible.InnerException!.Message);
        // Rank 1 alone passes a bad decay: it fails before the AllGather, and the other ranks are released with that error.
        var oneRank = Assert.Throws<RankFailedException>(() => ProcessGroups.RunInProcess(3, group =>
            method.Forward(group, q, q, q, new AttentionOptions(Decay: group.Rank == 1 ? [2.0, 0.5] : null)), threadsPerRank: 1));
        Assert.Equal(1, oneRank.Rank);
        Assert.Equal("decay", Assert.IsType<ArgumentOutOfRangeException>(oneRank.InnerException).ParamName);
    }
}
