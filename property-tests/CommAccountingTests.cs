using Lasp2.Research.Comm;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// Bytes recorded per collective equal the ring formulas of the accounting convention (written out here
/// independently of <see cref="CommVolume"/>), for every world size 1..8 and every rank.
/// </summary>
public class CommAccountingTests
{
    public static TheoryData<int> WorldSizes() => [1, 2, 3, 4, 5, 6, 7, 8];

    [Theory]
    [MemberData(nameof(WorldSizes))]
    public void RecordedBytesEqualTheRingFormulas(int w)
    {
        var stats = ProcessGroups.RunInProcess(w, g =>
        {
            using var scope = NewDisposeScope();
            var state = ones(3, 5);                                    // S = 60 bytes (float32)
            g.AllGather(state);
            g.AllGatherAsync(ones(3, 5, dtype: ScalarType.BFloat16)).Wait();   // 30 bytes
            g.ReduceScatter(ones(w, 3, 5));                            // W blocks of 60 bytes
            g.ReduceScatterAsync(ones(w, 3, 5)).Wait();
            g.AllReduce(ones(7, dtype: ScalarType.Float64));           // B = 56 bytes
            g.AllToAll(ones(2 * w, 3), splitDim: 0, concatDim: 1);     // W blocks of 24 bytes
            g.Broadcast(state, root: w - 1);
            g.SendRecv(state, (g.Rank + 1) % w, (g.Rank + w - 1) % w);
            g.SendRecvAsync(state, (g.Rank + 1) % w, (g.Rank + w - 1) % w).Wait();
            if (g.Rank == 0) g.Send(state, w - 1);
            if (g.Rank == w - 1) g.Recv([3, 5], ScalarType.Float32, 0);
            g.Barrier();
            return g.Stats;
        }, TimeSpan.FromSeconds(60), threadsPerRank: 1);

        for (int rank = 0; rank < w; rank++)
        {
            var s = stats[rank];
            int others = w - 1, root = w - 1, chainLast = (root + w - 1) % w;
            bool ring = w > 1;
            Expect(s, CommKind.AllGather, 2, others * 60 + others * 30, others * 60 + others * 30);
            Expect(s, CommKind.ReduceScatter, 2, 2 * others * 60, 2 * others * 60);
            Expect(s, CommKind.AllReduce, 1, 2 * others * 56 / w, 2 * others * 56 / w);
            Expect(s, CommKind.AllToAll, 1, others * 24, others * 24);
            Expect(s, CommKind.Broadcast, 1, ring && rank != chainLast ? 60 : 0, rank != root ? 60 : 0);
            Expect(s, CommKind.SendRecv, 2, ring ? 120 : 0, ring ? 120 : 0);
            Expect(s, CommKind.Send, rank == 0 ? 1 : 0, rank == 0 && ring ? 60 : 0, 0);
            Expect(s, CommKind.Recv, rank == w - 1 ? 1 : 0, 0, rank == w - 1 && ring ? 60 : 0);
            Expect(s, CommKind.Barrier, 1, 0, 0);
            Assert.All(s.Snapshot(), r => Assert.True(r.Wait >= TimeSpan.Zero, $"{r.Kind} wait {r.Wait}"));
        }
    }

    static void Expect(CommStats stats, string kind, long calls, long sent, long received)
    {
        var record = stats[kind];
        Assert.True((calls, sent, received) == (record.Calls, record.BytesSent, record.BytesReceived),
            $"{kind}: expected calls {calls}, sent {sent}, received {received}; " +
            $"recorded {record.Calls}, {record.BytesSent}, {record.BytesReceived}");
    }

    /// <summary>The report has one row per (rank, kind) and the aggregate sums bytes over ranks.</summary>
    [Fact]
    public void ReportRowsAndAggregateMatchTheStats()
    {
        const int w = 3;
        var stats = ProcessGroups.RunInProcess(w, g =>
        {
            using var scope = NewDisposeScope();
            g.AllGather(ones(4));        // 16 bytes
            g.AllGather(ones(4));
            g.Barrier();
            return g.Stats;
        }, TimeSpan.FromSeconds(60), threadsPerRank: 1);
        var perRank = CommReport.PerRank(stats);
        Assert.Equal(w * 2, perRank.Rows.Count);
        var total = CommReport.Aggregate(perRank);
        var gather = total.Rows.Single(row => (string)row["kind"] == CommKind.AllGather);
        Assert.Equal(2L * w, Convert.ToInt64(gather["calls"]));
        Assert.Equal(2L * w * (w - 1) * 16, Convert.ToInt64(gather["bytes_sent"]));
        Assert.Equal(2L * w * (w - 1) * 16, Convert.ToInt64(gather["bytes_received"]));
        string text = CommReport.ToText(total);
        Assert.Contains("AllGather", text);
        Assert.Contains((2L * w * (w - 1) * 16).ToString(), text);
    }
}
