using FsCheck;
using FsCheck.Fluent;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using Lasp2.Research.Simulation;
using Lasp2.Research.Verification;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// The simulated network changes time, never values: every registered method run through
/// <see cref="SimulatedProcessGroup"/> equals the reference and gives the same bits as without it. The analytic
/// schedules equal what the real runs record (phases, flops, collectives, bytes, peers, issue/wait order), so the
/// shapes-only replay equals the real-execution virtual clock.
/// </summary>
public class SimulationTests
{
    /// <summary>Two GPUs per node, so that small worlds already cross nodes; rates chosen so compute and communication compare.</summary>
    internal static readonly Topology Small = new("test", "2 GPUs per node", 2,
        new Link("intra", 1e-6, 1e9), new Link("inter", 5e-6, 1e8), 1,
        new DeviceSpec("test", 1e9, 1e9, 1.0, 1e12, 8, "bf16"), []);

    public static TheoryData<string> Methods => new(MethodRegistry.Names);

    /// <summary>The registered methods with a shapes-only schedule (the gated methods have none yet).</summary>
    public static TheoryData<string> Scheduled => new(MethodRegistry.Names.Where(MethodSchedules.Methods.Contains));

    [Theory]
    [MemberData(nameof(Methods))]
    public void DecoratorKeepsEveryMethodEqualToTheReferenceBitForBit(string method)
    {
        Prop.ForAll(BaselineCases.For(method), config =>
        {
            using var scope = NewDisposeScope();
            var network = new SimulatedNetwork(Small, config.WorldSize);
            var simulated = ProcessGroups.RunInProcess(config.WorldSize,
                g => DistributedChecks.Run(new SimulatedProcessGroup(g, network), config, keepTensors: g.Rank == 0), threadsPerRank: 1)[0];
            var plain = DistributedChecks.RunInProcess(config, keepTensors: true)[0];
            Assert.Equal(4, simulated.Checks.Count);
            foreach (var check in simulated.Checks)
                Assert.True(check.Passed, $"{check.Name} {check.Quantity}: relative error {check.Error.MaxRel:0.00e+00} > {check.Tolerance:0e+00}");
            foreach (var name in new[] { "o", "dq", "dk", "dv" })
                Assert.True(simulated.Tensors!.ByName[name].contiguous().bytes.SequenceEqual(plain.Tensors!.ByName[name].contiguous().bytes),
                            $"{name} differs with the simulated network: {config.Label}");
            Assert.Equal(plain.Comm.Select(r => (r.Kind, r.Calls, r.BytesSent, r.BytesReceived)),
                         simulated.Comm.Select(r => (r.Kind, r.Calls, r.BytesSent, r.BytesReceived)));
            // the gated methods' kernels do not report flops yet, so at W = 1 (no traffic) their clock stays at 0
            bool metered = MethodSchedules.Methods.Contains(method);
            Assert.All(network.Replay(), t => Assert.True((t.Total > 0 || !metered) && t.Total >= t.Compute));
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(6));
    }

    [Theory]
    [MemberData(nameof(Scheduled))]
    public void AnalyticScheduleEqualsTheRecordedRun(string method)
    {
        Prop.ForAll(BaselineCases.For(method), config =>
        {
            var (recorded, network) = Record(config);
            var shape = ShapeOf(config);
            var analytic = Enumerable.Range(0, config.WorldSize).Select(r => Layer(method, shape, r)).ToList();
            for (int r = 0; r < config.WorldSize; r++) AssertSameSchedule(analytic[r], recorded[r], $"rank {r} of {config.Label}");
            var real = network.Replay();
            var replayed = VirtualClock.Replay(analytic, network.Cost, Small.Device.FlopsPerSecond);
            for (int r = 0; r < config.WorldSize; r++)
            {
                Assert.Equal(real[r].Total, replayed[r].Total, 9);
                Assert.Equal(real[r].Compute, replayed[r].Compute, 9);
            }
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(15));
    }

    /// <summary>The layer's forward then backward schedule of one rank.</summary>
    internal static IReadOnlyList<SimEvent> Layer(string method, LayerShape shape, int rank)
    {
        var schedule = MethodSchedules.For(method, shape, rank);
        var trace = new TraceBuilder();
        trace.Append(schedule.Forward);
        trace.Append(schedule.Backward);
        return trace.Events;
    }

    internal static LayerShape ShapeOf(DistributedCheckConfig c) =>
        new(c.Batch, c.Heads, MethodRegistry.Get(c.Method).Supports.Kind == AttentionKind.Softmax ? c.KvHeads : c.Heads,
            c.Seq, c.DimK, c.DimV, c.WorldSize, c.BlockSize, c.Causal, c.Layout, sizeof(double));

    /// <summary>Runs one layer forward + backward on W in-process ranks through the simulated network (inputs all ones: the schedule ignores values).</summary>
    internal static (IReadOnlyList<SimEvent>[] Schedules, SimulatedNetwork Network) Record(DistributedCheckConfig c)
    {
        var method = MethodRegistry.Get(c.Method);
        var shape = ShapeOf(c);
        var network = new SimulatedNetwork(Small, c.WorldSize);
        ProcessGroups.RunInProcess(c.WorldSize, g =>
        {
            using var scope = NewDisposeScope();
            long local = c.Seq / c.WorldSize;
            var q = ones([c.Batch, c.Heads, local, c.DimK], float64).requires_grad_(true);
            var k = ones([c.Batch, shape.KvHeads, local, c.DimK], float64).requires_grad_(true);
            var v = ones([c.Batch, shape.KvHeads, local, c.DimV], float64).requires_grad_(true);
            var simulated = new SimulatedProcessGroup(g, network);
            var output = method.Forward(simulated, q, k, v, c.Options);
            output.backward([ones_like(output)]);
            simulated.Flush();
        }, threadsPerRank: 1);
        return (Enumerable.Range(0, c.WorldSize).Select(network.Schedule).ToArray(), network);
    }

    internal static void AssertSameSchedule(IReadOnlyList<SimEvent> expected, IReadOnlyList<SimEvent> actual, string where)
    {
        string Show(IReadOnlyList<SimEvent> events) => string.Join(" ", events.Select(e => e switch
        {
            ComputeEvent c => $"C{c.Flops:0}",
            IssueEvent i => $"I{i.Handle}:{i.Kind}:{i.Bytes}:{i.Destination}:{i.Source}",
            WaitEvent w => $"W{w.Handle}",
            _ => "?",
        }));
        bool same = expected.Count == actual.Count && expected.Zip(actual).All(p => p switch
        {
            (ComputeEvent a, ComputeEvent b) => Math.Abs(a.Flops - b.Flops) <= 1e-9 * Math.Max(a.Flops, b.Flops),
            var (a, b) => a.Equals(b),
        });
        Assert.True(same, $"{where}: analytic schedule\n  {Show(expected)}\nrecorded run\n  {Show(actual)}");
    }
}
