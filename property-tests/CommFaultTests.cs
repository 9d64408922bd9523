using System.Diagnostics;
using Lasp2.Research.Comm;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// A failing, missing or mismatched rank never hangs the in-process backend: the caller gets one
/// <see cref="RankFailedException"/> that names the rank and carries its error.
/// </summary>
public class CommFaultTests
{
    /// <summary>Generous: if release depended on the timeout, the 5 s bound below would be missed by minutes.</summary>
    static readonly TimeSpan LongTimeout = TimeSpan.FromMinutes(10);

    static RankFailedException Fails(int worldSize, Action<IProcessGroup> body, TimeSpan timeout) =>
        Assert.Throws<RankFailedException>(() => ProcessGroups.RunInProcess(worldSize, body, timeout, threadsPerRank: 1));

    [Fact]
    public void ARankThatThrowsMidCollectiveReleasesEveryOtherRankWithinFiveSeconds()
    {
        var clock = Stopwatch.StartNew();
        var failure = Fails(4, g =>
        {
            using var scope = NewDisposeScope();
            for (int step = 0; step < 5; step++)
            {
                if (g.Rank == 2 && step == 3) throw new InvalidOperationException("boom at step 3");
                g.AllGather(ones(3));
                g.AllReduce(ones(3));
            }
        }, LongTimeout);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"all ranks should be released within 5 s; took {clock.Elapsed}");
        Assert.Equal(2, failure.Rank);
        Assert.IsType<InvalidOperationException>(failure.InnerException);
        Assert.Contains("rank 2 of 4 failed", failure.Message);
        Assert.Contains("boom at step 3", failure.Message);
    }

    [Fact]
    public void ARankThatThrowsWhileOthersWaitOnAsyncHandlesAndRecvReleasesThem()
    {
        var clock = Stopwatch.StartNew();
        var failure = Fails(3, g =>
        {
            using var scope = NewDisposeScope();
            if (g.Rank == 0) throw new ArgumentException("bad input on rank 0");
            var pending = g.AllGatherAsync(ones(2));
            if (g.Rank == 1) g.Recv([2], ScalarType.Float32, source: 0);
            pending.Wait();
        }, LongTimeout);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"all ranks should be released within 5 s; took {clock.Elapsed}");
        Assert.Equal(0, failure.Rank);
        Assert.Contains("bad input on rank 0", failure.Message);
    }

    [Fact]
    public void ARankThatNeverArrivesTimesOutNamingTheCollectiveAndTheMissingRank()
    {
        using var release = new ManualResetEventSlim(false);
        try
        {
            var failure = Fails(4, g =>
            {
                using var scope = NewDisposeScope();
                g.Barrier();
                if (g.Rank == 3) release.Wait();   // stuck in its own work, never reaches the AllGather
                else g.AllGather(ones(4));
            }, TimeSpan.FromSeconds(1));
            Assert.IsType<CommTimeoutException>(failure.InnerException);
            Assert.NotEqual(3, failure.Rank);
            Assert.Contains("AllGather #1", failure.Message);
            Assert.Contains("rank(s) 3 did not arrive", failure.Message);
        }
        finally
        {
            release.Set();
        }
    }

    [Fact]
    public void ARankThatReturnsEarlyFailsTheRunAtOnceNamingIt()
    {
        var clock = Stopwatch.StartNew();
        var failure = Fails(3, g =>
        {
            using var scope = NewDisposeScope();
            if (g.Rank != 1) g.ReduceScatter(ones(3, 2));
        }, LongTimeout);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"should fail at once, not at the timeout; took {clock.Elapsed}");
        Assert.Equal(1, failure.Rank);
        Assert.Contains("ReduceScatter #0", failure.Message);
        Assert.Contains("rank(s) 1 returned", failure.Message);
    }

    [Theory]
    [InlineData("shape", "ranks disagree on dtype and shape")]
    [InlineData("dtype", "ranks disagree on dtype and shape")]
    [InlineData("kind", "ranks disagree on which collective was called")]
    [InlineData("op", "ranks disagree on the arguments")]
    public void MismatchedCallsAcrossRanksAreAClearError(string mismatch, string expected)
    {
        var failure = Fails(3, g =>
        {
            using var scope = NewDisposeScope();
            bool odd = g.Rank == 2;
            var x = mismatch switch
            {
                "shape" => ones(odd ? 5 : 4),
                "dtype" => ones(4, dtype: odd ? ScalarType.Float64 : ScalarType.Float32),
                _ => ones(4),
            };
            if (mismatch == "kind" && odd) g.AllReduce(x);
            else if (mismatch == "op") g.AllReduce(x, odd ? ReduceOp.Max : ReduceOp.Sum);
            else g.AllGather(x);
        }, LongTimeout);
        Assert.IsType<CommException>(failure.InnerException);
        Assert.Contains(expected, failure.Message);
        Assert.Contains("rank 2:", failure.Message);
    }

    [Fact]
    public void ARecvOfTheWrongShapeNamesBothSides()
    {
        var failure = Fails(2, g =>
        {
            using var scope = NewDisposeScope();
            if (g.Rank == 0) g.Send(ones(3, dtype: ScalarType.Float64), 1);
            else g.Recv([4], ScalarType.Float64, 0);
        }, LongTimeout);
        Assert.Equal(1, failure.Rank);
        Assert.Contains("rank 0 sent Float64 [3] but rank 1 expects Float64 [4]", failure.Message);
    }

    [Theory]
    [InlineData("destination")]
    [InlineData("root")]
    [InlineData("splitDim")]
    [InlineData("input")]
    [InlineData("color")]
    public void BadArgumentsNameTheParameter(string parameter)
    {
        var failure = Fails(2, g =>
        {
            using var scope = NewDisposeScope();
            switch (parameter)
            {
                case "destination": g.Send(ones(1), destination: 2); break;
                case "root": g.Broadcast(ones(1), root: -1); break;
                case "splitDim": g.AllToAll(ones(3, 2), splitDim: 0, concatDim: 1); break;
                case "input": g.ReduceScatter(ones(3, 2)); break;
                default: g.Split(color: -1, key: 0); break;
            }
        }, LongTimeout);
        var error = Assert.IsAssignableFrom<ArgumentException>(failure.InnerException);
        Assert.Equal(parameter, error.ParamName);
    }

    [Fact]
    public void BadRunArgumentsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>("worldSize", () => ProcessGroups.RunInProcess(0, _ => { }));
        Assert.Throws<ArgumentOutOfRangeException>("timeout", () => ProcessGroups.RunInProcess(1, _ => { }, TimeSpan.Zero));
        Assert.Throws<ArgumentOutOfRangeException>("threadsPerRank", () => ProcessGroups.RunInProcess(1, _ => { }, threadsPerRank: 0));
    }
}
