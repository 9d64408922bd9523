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
/// Measured communication equals the analytic model (<see cref="CommModel"/>, the comparison table of
/// docs/algorithms.md, "Communication", made exact) for every method, rank and direction: the calls of every kind, the bytes
/// sent and received (exact integers, the backend's ring accounting), and no other kind. The sequential
/// steps are checked from the measured calls: a collective is one step; a chain (LASP-1, All-Scan) has one hop
/// per K Sends (summed over ranks; K = 1, or All-Scan's column blocks) and K - 1 more steps for the last block; the ring's forward has one step per SendRecv, and its backward W rounds (a
/// KV SendRecv overlapping the previous accumulator's, plus the accumulators' last hop home).
/// </summary>
public class CommVolumeTests
{
    const int MaxTest = 25;

    /// <summary>One rank's records of the forward and of the backward pass.</summary>
    sealed record Measured(IReadOnlyList<CommRecord> Forward, IReadOnlyList<CommRecord> Backward);

    static Measured[] Measure(DistributedCheckConfig config)
    {
        var method = MethodRegistry.Get(config.Method);
        bool softmax = method.Supports.Kind == AttentionKind.Softmax;
        return ProcessGroups.RunInProcess(config.WorldSize, group =>
        {
            using var scope = NewDisposeScope();
            long c = config.Seq / config.WorldSize, kvHeads = softmax ? config.KvHeads : config.Heads;
            long dimV = softmax ? config.DimK : config.DimV;
            var q = randn([config.Batch, config.Heads, c, config.DimK], dtype: float64).requires_grad_(true);
            var k = randn([config.Batch, kvHeads, c, config.DimK], dtype: float64).requires_grad_(true);
            var v = randn([config.Batch, kvHeads, c, dimV], dtype: float64).requires_grad_(true);
            group.Stats.Reset();
            var output = method.Forward(group, q, k, v, config.Options);
            var forward = group.Stats.Snapshot();
            group.Stats.Reset();
            output.backward([ones_like(output)]);
            return new Measured(forward, group.Stats.Snapshot());
        }, threadsPerRank: 1);
    }

    static CommShape Shape(DistributedCheckConfig c)
    {
        bool softmax = MethodRegistry.Get(c.Method).Supports.Kind == AttentionKind.Softmax;
        return new CommShape(c.Batch, c.Heads, softmax ? c.KvHeads : c.Heads, c.Seq, c.DimK, softmax ? c.DimK : c.DimV,
                             c.WorldSize, sizeof(double), c.Layout, c.Causal);
    }

    static void SameCalls(string label, DirectionPrediction predicted, IReadOnlyList<CommRecord> measured)
    {
        var actual = measured.Where(r => r.Calls > 0).ToDictionary(r => r.Kind);
        Assert.True(predicted.Calls.Select(p => p.Kind).Order().SequenceEqual(actual.Keys.Order()),
            $"{label}: kinds predicted [{string.Join(", ", predicted.Calls.Select(p => p.Kind))}], measured [{string.Join(", ", actual.Keys)}]");
        foreach (var p in predicted.Calls)
        {
            var m = actual[p.Kind];
            Assert.True((p.Calls, p.BytesSent, p.BytesReceived) == (m.Calls, m.BytesSent, m.BytesReceived),
                $"{label} {p.Kind}: predicted calls/sent/received {p.Calls}/{p.BytesSent}/{p.BytesReceived}, measured {m.Calls}/{m.BytesSent}/{m.BytesReceived}");
        }
    }

    /// <summary>
    /// Sequential steps read off the measured calls of every rank, by the kinds used (see the class comment):
    /// a chain of Sends counts every hop of every rank; a backward ring of SendRecvs W rounds; otherwise every
    /// call of rank 0 is one step.
    /// </summary>
    static long MeasuredSteps(int worldSize, IReadOnlyList<IReadOnlyList<CommRecord>> ranks, bool backward)
    {
        long Calls(int rank, string kind) => ranks[rank].Where(r => r.Kind == kind).Sum(r => r.Calls);
        long sends = Enumerable.Range(0, worldSize).Sum(rank => Calls(rank, CommKind.Send));
        // a chain whose hops travel in K messages each (column blocks, pipelined): K is the common divisor of
        // every rank's Sends, the chain sends / K hops, and the last block arrives K - 1 steps after the first
        long blocks = Enumerable.Range(0, worldSize).Select(rank => Calls(rank, CommKind.Send)).Where(n => n > 0)
                                .Aggregate(0L, (a, b) => (long)System.Numerics.BigInteger.GreatestCommonDivisor(a, b));
        long sendRecvs = Calls(0, CommKind.SendRecv);
        return sends > 0 ? sends / blocks + blocks - 1
             : backward && sendRecvs > 0 ? sendRecvs / 2 + 1
             : ranks[0].Sum(r => r.Calls);
    }

    [Theory]
    [MemberData(nameof(BaselineCases.Registered), MemberType = typeof(BaselineCases))]
    public void MatchesModel(string method)
    {
        Prop.ForAll(BaselineCases.For(method), config =>
        {
            var measured = Measure(config);
            var shape = Shape(config);
            for (int rank = 0; rank < config.WorldSize; rank++)
            {
                var predicted = CommModel.Predict(method, shape, rank);
                SameCalls($"{config.Label} rank {rank} forward", predicted.Forward, measured[rank].Forward);
                SameCalls($"{config.Label} rank {rank} backward", predicted.Backward, measured[rank].Backward);
            }
            var model = CommModel.Predict(method, shape, 0);
            Assert.Equal(model.Forward.SequentialSteps,
                         MeasuredSteps(config.WorldSize, measured.Select(m => m.Forward).ToList(), backward: false));
            Assert.Equal(model.Backward.SequentialSteps,
                         MeasuredSteps(config.WorldSize, measured.Select(m => m.Backward).ToList(), backward: true));
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(MaxTest));
    }


    /// <summary>The model against the table's closed forms at one hand-checked point (B=1, H=8, Hkv=2, N=64, d=16, W=4, float32).</summary>
    [Fact]
    public void ModelAgreesWithTheComparisonTable()
    {
        var shape = new CommShape(1, 8, 2, 64, 16, 16, 4, 4, Layout.Contiguous, Causal: true);
        long state = 1 * 8 * 16 * 16 * 4, kvBlock = 2L * 1 * 16 * 2 * 16 * 4;              // S; 2 B C Hkv d e
        Assert.Equal(3 * state, CommModel.Predict("lasp2", shape, 1).Backward.BytesReceived); // (W-1) S
        Assert.Equal(3 * (state + 8 * 4), CommModel.Predict("lasp2", shape, 1).Forward.BytesReceived); // + the H gammas
        Assert.Equal(state, CommModel.Predict("lasp1", shape, 1).Forward.BytesReceived);     // 1 S
        Assert.Equal(3, CommModel.Predict("lasp1", shape, 1).Forward.SequentialSteps);      // W-1 hops
        Assert.Equal(3 * kvBlock, CommModel.Predict("ring-softmax", shape, 1).Forward.BytesSent);  // 2 (W-1) B C Hkv d
        Assert.Equal(3 * kvBlock, CommModel.Predict("allgather-cp", shape, 1).Backward.BytesSent);
        // Ulysses: (W-1)/W of Q, K, V, O = 3/4 * 16 tokens * 16 d * 4 bytes * (8 + 2 + 2 + 8) heads
        Assert.Equal(3 * 16 * 16 * 4 * 20 / 4, CommModel.Predict("ulysses-softmax", shape, 1).Forward.BytesSent);
    }
}
