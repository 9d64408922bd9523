using Lasp2.Reference;
using System.Diagnostics;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Bench;

/// <summary>
/// The timed loop every rank runs: random local shards, then per iteration a barrier, forward, and
/// backward against a fixed random dO, each iteration in its own dispose scope (RSS stays flat).
/// Communication is read from the group's <see cref="CommStats"/> as the difference over the
/// iteration, so the barrier that aligns the ranks is not counted.
/// </summary>
public static class BenchRunner
{
    /// <summary>Runs <paramref name="benchCase"/> on this rank and returns one sample per timed iteration.</summary>
    public static IReadOnlyList<RankSample> RunRank(IProcessGroup group, ISequenceParallelAttention method, BenchCase benchCase, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(method);
        if (group.WorldSize != benchCase.Shape.WorldSize)
            throw new ArgumentException($"the group has {group.WorldSize} ranks but the case asks for W = {benchCase.Shape.WorldSize}.", nameof(group));
        if (benchCase.Warmup < 0) throw new ArgumentOutOfRangeException(nameof(benchCase), benchCase.Warmup, "warm-up iterations must be >= 0");
        if (benchCase.Iterations < 1) throw new ArgumentOutOfRangeException(nameof(benchCase), benchCase.Iterations, "iterations must be >= 1");
        device ??= CPU;
        var s = benchCase.Shape;
        using var scope = NewDisposeScope();
        using var generator = new Generator(20250211 + (ulong)group.Rank);
        // Scaled in place: a separate quotient would keep the unscaled draw alive in this scope (4 more [B,H,C,D] per rank).
        Tensor Random(long heads) =>
            randn([s.Batch, heads, s.LocalLen, s.HeadDim], dtype: benchCase.Dtype, device: device, generator: generator).OverInPlace(Math.Sqrt(s.HeadDim));
        var (q, k, v, dO) = (Random(s.Heads), Random(s.KvHeads), Random(s.KvHeads), Random(s.Heads)); // [B,H,C,D]
        var options = new AttentionOptions(s.Causal, benchCase.Decay, Reference.Layout.Contiguous, s.BlockSize, Documents: benchCase.DocumentBoundaries);

        var samples = new List<RankSample>();
        for (int iteration = 0; iteration < benchCase.Warmup + benchCase.Iterations; iteration++)
        {
            group.Barrier();
            var before = Totals(group.Stats);
            double cpu = ProcStatus.ThreadCpuSeconds();
            var process = ProcStatus.ProcessUsage();
            var watch = Stopwatch.StartNew();
            using (NewDisposeScope())
            {
                var leaves = new[] { q, k, v }.Select(x => x.detach().requires_grad_(true)).ToArray();
                var output = method.Forward(group, leaves[0], leaves[1], leaves[2], options);
                // autograd.grad rather than backward(): no gradient accumulates in the leaves between iterations.
                torch.autograd.grad([output], leaves, [dO]);
            }
            double wall = watch.Elapsed.TotalSeconds;
            cpu = ProcStatus.ThreadCpuSeconds() - cpu;
            process = ProcStatus.ProcessUsage() - process;
            var after = Totals(group.Stats);
            if (iteration >= benchCase.Warmup)
                samples.Add(new RankSample(wall, cpu, after.Wait - before.Wait, after.Sent - before.Sent,
                    after.Received - before.Received, after.Calls - before.Calls, process.SystemSeconds, process.MinorFaults));
        }
        return samples;
    }

    static (long Calls, long Sent, long Received, double Wait) Totals(CommStats stats)
    {
        var records = stats.Snapshot();
        return (records.Sum(r => r.Calls), records.Sum(r => r.BytesSent), records.Sum(r => r.BytesReceived),
            records.Sum(r => r.Wait.TotalSeconds));
    }
}
