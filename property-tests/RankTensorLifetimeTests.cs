using System.Runtime.CompilerServices;
using Lasp2.Research.Comm;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// A tensor a rank body makes outside any dispose scope stays alive until the body returns. TorchSharp passes libtorch
/// only the raw handle, so a temporary that nothing references (in optimised code, e.g. the AllGather result whose
/// <c>unbind(0)</c> is running) could otherwise be finalized by a collection another rank thread started, while libtorch
/// reads it: a segfault in libtorch_cpu.so on a "lasp2 rank" thread. Here the collection is forced, so the check is
/// deterministic: without the rank's scope the tensor is collected at the first GC.Collect.
/// </summary>
public class RankTensorLifetimeTests
{
    [Fact]
    public void AnUnreferencedTensorOfARankBodySurvivesCollectionsUntilTheBodyReturns()
    {
        var ranks = ProcessGroups.RunInProcess(3, group =>
        {
            var made = MadeAndDropped();
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            bool alive = made.TryGetTarget(out var tensor) && !tensor.IsInvalid;
            return (Alive: alive, Result: full(2, group.Rank, dtype: ScalarType.Float64));
        }, threadsPerRank: 1);
        Assert.All(ranks, r => Assert.True(r.Alive, "a tensor of the rank body was collected while the body ran"));
        // The scope lets go of what the body returns without disposing it: the results belong to the caller.
        for (int rank = 0; rank < ranks.Length; rank++)
        {
            Assert.False(ranks[rank].Result.IsInvalid, $"rank {rank}'s result was disposed when its body returned");
            Assert.Equal(rank, ranks[rank].Result[1].item<double>());
        }
    }

    /// <summary>A tensor nothing references once this returns (not inlined, so no caller local holds it).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static WeakReference<Tensor> MadeAndDropped() => new(ones(3));
}
