using FsCheck;
using FsCheck.Fluent;
using Lasp2.Research.Verification;
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>
/// Every baseline method (LASP-1, Ring Attention softmax and linear, AllGather-CP, Ulysses softmax and
/// linear) equals the single-device reference in O, dQ, dK, dV on W in-process ranks (W in 1..8), float64,
/// normwise relative tolerance 1e-10, for random shapes, masks, decays, layouts and GQA it supports.
/// Runs through lasp2's DistributedChecks, the same path as `lasp2 verify`.
/// </summary>
public class BaselinesEqualReferenceTests
{
    const int MaxTest = 12;

    static void EqualsReference(string method)
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

    [Fact] public void Lasp1EqualsReference() => EqualsReference("lasp1");
    [Fact] public void RingLinearEqualsReference() => EqualsReference("ring-linear");
    [Fact] public void RingSoftmaxEqualsReference() => EqualsReference("ring-softmax");
    [Fact] public void AllGatherContextParallelEqualsReference() => EqualsReference("allgather-cp");
    [Fact] public void UlyssesLinearEqualsReference() => EqualsReference("ulysses-linear");
    [Fact] public void UlyssesSoftmaxEqualsReference() => EqualsReference("ulysses-softmax");
}
