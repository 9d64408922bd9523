using FsCheck;
using FsCheck.Fluent;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using Lasp2.Research.Verification;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// Every baseline method (LASP-1, Ring Attention softmax and linear, AllGather-CP, Ulysses softmax and
/// linear) equals the single-device reference in O, dQ, dK, dV on W in-process ranks (W in 1..8), float64,
/// normwise relative tolerance 1e-10, for random shapes, masks, decays, layouts and GQA it supports.
/// Runs through lasp2's DistributedChecks, the same path as `lasp2 verify`.
/// </summary>
public class BaselinesEqualReferenceTests
{
    const int MaxTest = 40;

    [Theory]
    [MemberData(nameof(BaselineCases.Registered), MemberType = typeof(BaselineCases))]
    public void EqualsReference(string method)
    {
        Prop.ForAll(BaselineCases.For(method), config =>
        {
            var report = DistributedChecks.RunInProcess(config)[0];
            Assert.Equal(4, report.Checks.Count);
            foreach (var check in report.Checks)
                Assert.True(check.Passed,
                    $"{check.Name} {check.Quantity}: relative error {check.Error.MaxRel:0.00e+00} > {check.Tolerance:0e+00}");
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(MaxTest));
    }


    /// <summary>Unsupported input fails on every rank before any communication, naming the parameter and the valid range.</summary>
    [Theory]
    [InlineData("ulysses-softmax", 2, 3, 3, 4, true, false, Layout.Contiguous, "q", "3 query heads are not divisible by worldSize = 2")]
    [InlineData("ulysses-softmax", 2, 4, 1, 4, true, false, Layout.Contiguous, "q", "1 KV heads are not divisible by worldSize = 2")]
    [InlineData("ring-softmax", 2, 2, 2, 4, true, true, Layout.Contiguous, "options", "does not support decay")]
    [InlineData("lasp1", 2, 2, 2, 4, false, false, Layout.Contiguous, "options", "does not support unmasked attention")]
    [InlineData("allgather-cp", 2, 2, 2, 3, true, false, Layout.Zigzag, "n", "not divisible by 2 * worldSize = 4")]
    [InlineData("ring-linear", 2, 2, 1, 4, true, false, Layout.Contiguous, "k", "linear attention needs equal head counts")]
    public void BadInputFailsClearly(string method, int worldSize, int heads, int kvHeads, int local, bool causal, bool decayed,
                                     Layout layout, string parameter, string message)
    {
        var failure = Assert.Throws<RankFailedException>(() => ProcessGroups.RunInProcess(worldSize, group =>
        {
            using var scope = NewDisposeScope();
            var q = randn([1, heads, local, 3], dtype: float64);
            var kv = randn([1, kvHeads, local, 3], dtype: float64);
            var options = new AttentionOptions(causal, decayed ? Enumerable.Repeat(0.9, heads).ToArray() : null, layout);
            MethodRegistry.Get(method).Forward(group, q, kv, kv, options);
        }));
        var error = Assert.IsAssignableFrom<ArgumentException>(failure.InnerException);
        Assert.Equal(parameter, error.ParamName);
        Assert.Contains(message, error.Message);
    }

    /// <summary>
    /// A rank that fails validation (here the last one, with a shard of the wrong length) takes the others down
    /// with its error while they wait in the ring or chain: the run ends with that rank's exception, not a hang
    /// (the timeout is only a backstop that would fail the test with a different exception).
    /// </summary>
    [Theory]
    [InlineData("ring-softmax")]
    [InlineData("lasp1")]
    [InlineData("allgather-cp")]
    public void OneFailingRankFailsEveryRank(string method)
    {
        var failure = Assert.Throws<RankFailedException>(() => ProcessGroups.RunInProcess(3, group =>
        {
            using var scope = NewDisposeScope();
            long local = group.Rank == 2 ? 3 : 4;
            var x = randn([1, 2, local, 3], dtype: float64);
            using var y = MethodRegistry.Get(method).Forward(group, x, x, x, new AttentionOptions(Layout: Layout.Zigzag));
        }, timeout: TimeSpan.FromSeconds(60)));
        Assert.Equal(2, failure.Rank);
        Assert.IsAssignableFrom<ArgumentException>(failure.InnerException);
    }
}
