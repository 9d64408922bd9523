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
    /// <summary>Each rank's events during one forward and backward of LASP-2 on its shard, and the method's overlap log.</summary>
    static (IReadOnlyList<RankEvent>[] Streams, OverlapLog Overlap) Record(DistributedCase c)
    {
        using var scope = NewDisposeScope();
        var method = new Lasp2Attention();
        var options = c.Config().Options;
        var (q, k, v, dO) = Lasp2TrapTests.Inputs(c);
        var streams = ProcessGroups.RunInProcess(c.WorldSize, group =>
        {
            using var rankScope = NewDisposeScope();
            var recording = new RecordingProcessGroup(group);
            var leaves = new[] { q, k, v }.Select(x => SequenceLayout.ShardOf(x, c.WorldSize, group.Rank, c.Layout).requires_grad_(true)).ToArray();
            method.Forward(recording, leaves[0], leaves[1], leaves[2], options)
                .backward([SequenceLayout.ShardOf(dO, c.WorldSize, group.Rank, c.Layout)]);
            return recording.Events;
        }, threadsPerRank: 1);
        return (streams, method.Overlap);
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
        var (streams, overlap) = Record(c);
        // The same windows that put the phases in the streams account for the overlap: one entry per rank and direction.
        Assert.Equal((c.WorldSize, c.WorldSize), (overlap["forward"].Calls, overlap["backward"].Calls));
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

    /// <summary>
    /// The recorder forwards every collective and records each one issued and completed, with the bytes the backend
    /// itself accounts (the <see cref="CommVolume"/> convention), per kind.
    /// </summary>
    [Fact]
    public void TheRecorderSeesEveryCollectiveWithTheBackendsBytes()
    {
        const int worldSize = 3;
        var results = ProcessGroups.RunInProcess(worldSize, group =>
        {
            using var rankScope = NewDisposeScope();
            var recording = new RecordingProcessGroup(group);
            var x = full(2, 3, group.Rank + 1.0, dtype: float64);                           // [2,3]
            var gathered = recording.AllGatherAsync(x).Wait();                              // [W,2,3]
            var blocks = recording.ReduceScatterAsync(gathered).Wait();                     // [2,3]
            var (next, previous) = ((group.Rank + 1) % worldSize, (group.Rank + worldSize - 1) % worldSize);
            var passed = recording.SendRecvAsync(blocks, next, previous).Wait();
            recording.Send(passed, next);
            var received = recording.Recv([2, 3], float64, previous);
            var sum = recording.AllReduce(recording.AllGather(received), ReduceOp.Max);
            var all = recording.AllToAll(recording.Broadcast(sum, root: 1), splitDim: 0, concatDim: 0);
            Assert.Equal([worldSize, 2L, 3L], all.shape);
            recording.Barrier();
            return (recording.Events, Stats: group.Stats.Snapshot());
        }, threadsPerRank: 1);
        foreach (var (events, stats) in results)
        {
            var issued = events.Where(e => e.Kind == RankEventKind.Issued).ToList();
            Assert.Equal(Enumerable.Range(0, issued.Count), issued.Select(e => e.Collective));
            Assert.Equal(issued.Select(e => e.Collective), events.Where(e => e.Kind == RankEventKind.Completed).Select(e => e.Collective));
            var recorded = issued.GroupBy(e => e.Name)
                .Select(g => (Kind: g.Key, Calls: (long)g.Count(), Sent: g.Sum(e => e.Bytes.Sent), Received: g.Sum(e => e.Bytes.Received)))
                .OrderBy(r => r.Kind, StringComparer.Ordinal);
            Assert.Equal(stats.Select(r => (r.Kind, r.Calls, r.BytesSent, r.BytesReceived)), recorded);
        }
    }
}
