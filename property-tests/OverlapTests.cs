using FsCheck.Xunit;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// LASP-2's overlap, proved from each rank's event stream (a <see cref="RecordingProcessGroup"/>) rather than assumed
/// from a positive compute time: the diagonal-block computation runs after the AllGather is issued and ends before
/// it is waited for, forward (state gather) and backward (dM gather), on every rank, for both layouts, causal and
/// unmasked. At W = 1 nothing may travel.
/// </summary>
public class OverlapTests
{
    /// <summary>This rank's events during one forward and backward of LASP-2 on its shard.</summary>
    static IReadOnlyList<RankEvent>[] Record(DistributedCase c)
    {
        var config = c.Config();
        var generator = new Generator((ulong)c.Seed);
        Tensor Random(long dim) => randn([c.Batch, c.Heads, c.Seq, dim], dtype: float64, generator: generator);
        var (q, k, v, dO) = (Random(c.DimK), Random(c.DimK), Random(c.DimV), Random(c.DimV));
        return ProcessGroups.RunInProcess(c.WorldSize, group =>
        {
            using var scope = NewDisposeScope();
            var recording = new RecordingProcessGroup(group);
            var leaves = new[] { q, k, v }.Select(x => SequenceLayout.ShardOf(x, c.WorldSize, group.Rank, c.Layout).requires_grad_(true)).ToArray();
            MethodRegistry.Get("lasp2").Forward(recording, leaves[0], leaves[1], leaves[2], config.Options)
                .backward([SequenceLayout.ShardOf(dO, c.WorldSize, group.Rank, c.Layout)]);
            return recording.Events;
        }, threadsPerRank: 1);
    }

    /// <summary>Passes when <paramref name="phase"/> began after collective #<paramref name="collective"/> was issued and ended before it was waited for.</summary>
    static void AssertBetweenIssueAndWait(IReadOnlyList<RankEvent> events, int collective, string phase, string context)
    {
        int Index(RankEventKind kind, string name, int id = -1) =>
            events.ToList().FindIndex(e => e.Kind == kind && e.Name == name && e.Collective == id);
        var (issued, waiting) = (Index(RankEventKind.Issued, CommKind.AllGather, collective), Index(RankEventKind.Waiting, CommKind.AllGather, collective));
        var (began, ended) = (Index(RankEventKind.PhaseBegan, phase), Index(RankEventKind.PhaseEnded, phase));
        Assert.True(issued >= 0 && waiting >= 0 && began >= 0 && ended >= 0 && issued < began && began < ended && ended < waiting,
            $"{context}: '{phase}' must run strictly between the issue and the wait of AllGather #{collective}; " +
            $"events: {string.Join(" | ", events)}");
    }

    [Property(MaxTest = 20, Arbitrary = [typeof(DistributedArbitraries)])]
    public void TheDiagonalBlocksRunWhileTheAllGatherIsInFlight(DistributedCase c)
    {
        var streams = Record(c);
        for (int rank = 0; rank < c.WorldSize; rank++)
        {
            var events = streams[rank];
            string context = $"rank {rank} of {c}";
            var issued = events.Where(e => e.Kind == RankEventKind.Issued).ToList();
            // One AllGather per direction and nothing else: #0 carries the states, #1 the dM.
            Assert.True(issued.Count == 2 && issued.All(e => e.Name == CommKind.AllGather),
                $"{context}: expected two AllGathers, got {string.Join(" | ", issued)}");
            if (c.WorldSize == 1)
            {
                // Nothing to send and nothing to hide: no collective traffic at all.
                Assert.All(issued, e => Assert.Equal(new CommBytes(0, 0), e.Bytes));
                continue;
            }
            Assert.All(issued, e => Assert.True(e.Bytes.Sent > 0 && e.Bytes.Received > 0, $"{context}: {e} moves nothing"));
            AssertBetweenIssueAndWait(events, 0, Lasp2Attention.ForwardIntra, context);
            AssertBetweenIssueAndWait(events, 1, Lasp2Attention.BackwardIntra, context);
        }
    }
}
