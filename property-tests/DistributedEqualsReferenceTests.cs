using FsCheck.Xunit;
using Lasp2.Reference;
using Lasp2.Research.Comm;
using Lasp2.Research.Verification;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// LASP-2 on W in-process ranks equals the single-device quadratic reference (float64, relative error
/// &lt;= 1e-10) for O, dQ, dK, dV; communicates exactly one AllGather per direction of one state per
/// piece; is deterministic; and does not depend on W, the block size or the layout beyond rounding.
/// </summary>
public class DistributedEqualsReferenceTests
{
    /// <summary>Runs a case on W in-process ranks (1 torch thread each); rank 0's global tensors and every rank's report.</summary>
    internal static (IReadOnlyDictionary<string, Tensor> Tensors, DistributedReport[] Reports) Run(DistributedCheckConfig config)
    {
        var reports = DistributedChecks.RunInProcess(config, keepTensors: true, threadsPerRank: 1);
        return (reports[0].Tensors!.ByName, reports);
    }

    /// <summary>The reference computed here from the run's own global inputs (independently of DistributedChecks).</summary>
    internal static void AssertEqualsReference(DistributedCheckConfig config, IReadOnlyDictionary<string, Tensor> t)
    {
        var (expected, grads) = Autograd.ForwardBackward(
            x => LinearAttention.Quadratic(x[0], x[1], x[2], config.Causal, config.HeadDecays()), t["dO"], t["q"], t["k"], t["v"]);
        AssertClose.Tensors("O", expected, t["o"], Compare.Float64Tolerance);
        AssertClose.Tensors("dQ", grads[0], t["dq"], Compare.Float64Tolerance);
        AssertClose.Tensors("dK", grads[1], t["dk"], Compare.Float64Tolerance);
        AssertClose.Tensors("dV", grads[2], t["dv"], Compare.Float64Tolerance);
    }

    [Property(MaxTest = 100, Arbitrary = [typeof(DistributedArbitraries)])]
    public void OutputAndGradientsEqualTheReference(DistributedCase c)
    {
        using var scope = NewDisposeScope();
        var (tensors, _) = Run(c.Config());
        AssertEqualsReference(c.Config(), tensors);
    }

    /// <summary>
    /// Per rank, per layer, per forward + backward: exactly two collectives, both AllGathers; forward moves
    /// one state [B,H,Dk,Dv] plus its H decays per piece, backward one state per piece (pieces: 1, zigzag 2);
    /// bytes received = (W-1) x that (ring accounting). The same for twice the sequence length.
    /// </summary>
    [Property(MaxTest = 15, Arbitrary = [typeof(DistributedArbitraries)])]
    public void ExactlyTwoAllGathersOfOneStatePerPieceIndependentOfN(DistributedCase c)
    {
        using var scope = NewDisposeScope();
        long state = (long)c.Batch * c.Heads * c.DimK * c.DimV;
        long pieces = SequenceLayout.PiecesPerRank(c.Layout);
        long expectedBytes = (c.WorldSize - 1L) * sizeof(double) * pieces * (state + c.Heads + state);
        foreach (var config in new[] { c.Config(), c.Config() with { Seq = 2 * c.Seq } })
        {
            var reports = DistributedChecks.RunInProcess(config, threadsPerRank: 1);
            Assert.Equal(c.WorldSize, reports.Length);
            foreach (var report in reports)
            {
                var record = Assert.Single(report.Comm);
                Assert.Equal(CommKind.AllGather, record.Kind);
                Assert.Equal(2, record.Calls);
                Assert.Equal(expectedBytes, record.BytesReceived);
                Assert.Equal(expectedBytes, record.BytesSent);
            }
        }
    }

    [Property(MaxTest = 10, Arbitrary = [typeof(DistributedArbitraries)])]
    public void SameSeedSameWorldGivesTheSameBits(DistributedCase c)
    {
        using var scope = NewDisposeScope();
        var (first, _) = Run(c.Config());
        var (second, _) = Run(c.Config());
        foreach (var name in new[] { "o", "dq", "dk", "dv" })
            Assert.True(first[name].contiguous().bytes.SequenceEqual(second[name].contiguous().bytes), $"{name} differs between two runs of {c}");
    }

    /// <summary>
    /// The same global problem on another world size, another block size and the other layout gives the
    /// same O, dQ, dK, dV within 1e-10 relative (the layout is only how tokens are placed, never what they see).
    /// </summary>
    [Property(MaxTest = 15, Arbitrary = [typeof(DistributedArbitraries)])]
    public void ResultsDoNotDependOnWorldSizeBlockSizeOrLayout(DistributedCase c)
    {
        using var scope = NewDisposeScope();
        var (baseline, _) = Run(c.Config());
        // zigzag on W ranks -> contiguous on 2W (or W) ranks; contiguous on W ranks -> one rank, zigzag if N is even.
        var other = c.Layout == Layout.Zigzag
            ? c.Config() with { Layout = Layout.Contiguous, WorldSize = 2 * c.WorldSize <= 8 ? 2 * c.WorldSize : c.WorldSize }
            : c.Config() with { Layout = c.Seq % 2 == 0 ? Layout.Zigzag : Layout.Contiguous, WorldSize = 1 };
        other = other with { BlockSize = c.BlockSize % 5 + 2 };
        var (changed, _) = Run(other);
        foreach (var name in new[] { "o", "dq", "dk", "dv" })
            AssertClose.Tensors($"{name} ({other.Label} block {other.BlockSize} vs {c})", baseline[name], changed[name], Compare.Float64Tolerance);
    }
}
