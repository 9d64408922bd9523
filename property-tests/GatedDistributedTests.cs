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

/// <summary>One distributed problem of a (method, recurrence) pair: W in 1..8, 1..5 tokens per piece, awkward dims and blocks.</summary>
public sealed record GatedDistributedCase(string Method, Recurrence Recurrence, int WorldSize, Layout Layout, int Batch, int Heads,
                                          int PieceLength, int DimK, int DimV, int BlockSize, GateRegime Regime, int Seed)
{
    public int Seq => PieceLength * WorldSize * SequenceLayout.PiecesPerRank(Layout);

    public GatedCheckConfig Config => new(Method, Recurrence, WorldSize, Layout, ScalarType.Float64, Batch, Heads, Seq, DimK, DimV,
                                          BlockSize, Regime, Seed);

    public override string ToString() =>
        $"{Method} {Recurrence.Name} W={WorldSize} {Layout} B={Batch} H={Heads} N={Seq} Dk={DimK} Dv={DimV} block={BlockSize} gates={Regime} seed={Seed}";
}

/// <summary>
/// Arbitraries over every (method, recurrence) pair the registry supports, shrinking toward W = 1, short pieces,
/// contiguous layout and small dims (the recurrence and method stay: a counterexample names the pair).
/// </summary>
public static class GatedDistributedArbitraries
{
    /// <summary>Every supported (method, recurrence) pair of the registry.</summary>
    public static (string Method, Recurrence Recurrence)[] Pairs(bool gatedMethodsOnly = false) =>
        MethodRegistry.All
            .Where(m => !gatedMethodsOnly || m.Recurrences.Count > 0)
            .SelectMany(m => Recurrence.All.Where(r => GatedChecks.Unsupported(m, r) is null).Select(r => (m.Name, r)))
            .ToArray();

    public static Arbitrary<GatedDistributedCase> Cases(bool gatedMethodsOnly = false) =>
        Arb.From(
            from pair in Gen.Elements(Pairs(gatedMethodsOnly))
            from worldSize in Gen.Choose(1, 8)
            from layout in Gen.Elements(Layout.Contiguous, Layout.Zigzag)
            from batch in Gen.Choose(1, 2)
            from heads in Gen.Choose(1, 2)
            from piece in Gen.Choose(1, 5)
            from dimK in Gen.Choose(1, 4)
            from dimV in Gen.Choose(1, 4)
            from block in Gen.Choose(1, 5)
            from regime in Gen.Elements(Enum.GetValues<GateRegime>())
            from seed in Gen.Choose(0, int.MaxValue)
            // a method that shards heads (Ulysses) gets H = W
            let fitted = MethodRegistry.Get(pair.Method).Unsupported(worldSize, heads, heads) is null ? heads : worldSize
            select new GatedDistributedCase(pair.Method, pair.Recurrence, worldSize, layout, batch, fitted, piece, dimK, dimV, block, regime, seed),
            Shrink);

    static IEnumerable<GatedDistributedCase> Shrink(GatedDistributedCase c)
    {
        foreach (int worldSize in new[] { c.WorldSize / 2, c.WorldSize - 1 }.Where(w => w >= 1 && w < c.WorldSize).Distinct())
            if (MethodRegistry.Get(c.Method).Unsupported(worldSize, c.Heads, c.Heads) is null) yield return c with { WorldSize = worldSize };
        if (c.Layout == Layout.Zigzag) yield return c with { Layout = Layout.Contiguous };
        if (c.PieceLength > 1) yield return c with { PieceLength = c.PieceLength - 1 };
        if (c.Batch > 1) yield return c with { Batch = 1 };
        if (c.Heads > 1 && MethodRegistry.Get(c.Method).Unsupported(c.WorldSize, 1, 1) is null) yield return c with { Heads = 1 };
        if (c.DimK > 1) yield return c with { DimK = c.DimK - 1 };
        if (c.DimV > 1) yield return c with { DimV = c.DimV - 1 };
        if (c.BlockSize > 1) yield return c with { BlockSize = c.BlockSize - 1 };
        if (c.Regime != GateRegime.Moderate) yield return c with { Regime = GateRegime.Moderate };
    }
}

/// <summary>
/// Every (method, recurrence) pair on W in-process ranks equals the per-token recurrent reference (float64, 1e-10
/// normwise relative) in O and the gradients of q, k, v, the log-gates and beta, for both layouts; the affine-summary
/// methods communicate exactly what their model predicts; unsupported pairs are refused by name.
/// </summary>
public class GatedDistributedTests
{
    [Property(MaxTest = 60)]
    public Property EveryPairEqualsTheRecurrentReference() =>
        Prop.ForAll(GatedDistributedArbitraries.Cases(), c =>
        {
            using var scope = NewDisposeScope();
            var report = GatedChecks.RunInProcess(c.Config)[0];
            foreach (var check in report.Checks)
                Assert.True(check.Passed, $"{check.Quantity}: relative error {check.Error.MaxRel:0.000e+00} > {check.Tolerance:0e+00} ({c})");
            Assert.Contains(report.Checks, check => check.Quantity == "dV");
        });

    /// <summary>Per rank and direction: the calls, bytes sent and bytes received of each kind equal the method's prediction.</summary>
    [Property(MaxTest = 25)]
    public Property MeasuredBytesEqualTheModel() =>
        Prop.ForAll(GatedDistributedArbitraries.Cases(gatedMethodsOnly: true), c =>
        {
            using var scope = NewDisposeScope();
            var shape = new CommShape(c.Batch, c.Heads, c.Heads, c.Seq, c.DimK, c.DimV, c.WorldSize, sizeof(double), c.Layout, Causal: true, c.Recurrence);
            var reports = GatedChecks.RunInProcess(c.Config);
            foreach (var report in reports)
            {
                int rank = Array.IndexOf(reports, report);
                var prediction = CommModel.Predict(c.Method, shape, rank);
                var expected = prediction.Forward.Calls.Concat(prediction.Backward.Calls)
                    .GroupBy(call => call.Kind)
                    .ToDictionary(g => g.Key, g => (Calls: g.Sum(x => x.Calls), Sent: g.Sum(x => x.BytesSent), Received: g.Sum(x => x.BytesReceived)));
                var measured = report.Comm.Where(r => r.Calls > 0)
                    .ToDictionary(r => r.Kind, r => (Calls: r.Calls, Sent: r.BytesSent, Received: r.BytesReceived));
                Assert.True(expected.OrderBy(x => x.Key).SequenceEqual(measured.OrderBy(x => x.Key)),
                    $"rank {rank}: measured {string.Join("; ", measured)} but the model says {string.Join("; ", expected)} ({c})");
            }
        });

    [Fact]
    public void UnsupportedPairsAndMixedOptionsAreRefusedByName()
    {
        using var scope = NewDisposeScope();
        var x = GatedInputs.Random(Recurrence.Gla, 1, 2, 8, 3, 2, ScalarType.Float64, 3);
        var gates = GatedInputs.GatesOf(Recurrence.Gla, x);
        var error = Assert.Throws<RankFailedException>(() => ProcessGroups.RunInProcess(2, group =>
            MethodRegistry.Get("lasp2").Forward(group, x["q"].narrow(2, 4 * group.Rank, 4), x["k"].narrow(2, 4 * group.Rank, 4),
                x["v"].narrow(2, 4 * group.Rank, 4), new AttentionOptions(Gates: gates.Narrow(4 * group.Rank, 4)))));
        Assert.Contains("lasp2 does not support the gla recurrence", error.Message);
        var mixed = Assert.Throws<RankFailedException>(() => ProcessGroups.RunInProcess(1, group =>
            MethodRegistry.Get("lasp2-affine").Forward(group, x["q"], x["k"], x["v"], new AttentionOptions(Decay: [0.9, 0.9], Gates: gates))));
        Assert.Contains("Decay or Gates, not both", mixed.Message);
        Assert.Contains("ring-softmax does not support the decay recurrence",
                        GatedChecks.Unsupported(MethodRegistry.Get("ring-softmax"), Recurrence.Decay));
    }
}
