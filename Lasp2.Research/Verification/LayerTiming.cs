using System.Diagnostics;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Bench;
using Lasp2.Research.Comm;
using Lasp2.Research.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Verification;

/// <summary>Shape and repetition of a layer timing (random inputs; layout [B,H,N,D]).</summary>
public sealed record LayerTimingConfig(int Batch = 1, int Heads = 8, int Seq = 65536, int Dim = 64, int BlockSize = 64,
                                       bool Causal = true, ScalarType Dtype = ScalarType.Float32, int Warmup = 1, int Repeats = 3);

/// <summary>
/// Median and minimum wall time of one layer forward + backward, the process CPU time per iteration (all threads:
/// robust when the machine is shared, inflated by spinning threads), the part of it spent in the kernel (system
/// time: page faults, zero-filling fresh pages), minor page faults per iteration, and the method's overlap (if any).
/// </summary>
public sealed record LayerTimingResult(string Name, TimeSpan Median, TimeSpan Min, TimeSpan CpuPerIteration, TimeSpan SystemPerIteration,
                                       double FaultsPerIteration, OverlapTotals? Overlap);

/// <summary>
/// Times one attention layer forward + backward (no timing assertions anywhere: this is for `lasp2 bench` and
/// the closing note). A distributed iteration lasts until its slowest rank finishes; ranks start together
/// after a barrier.
/// </summary>
public static class LayerTiming
{
    /// <summary>
    /// One sequence-parallel method on <paramref name="worldSize"/> in-process ranks (each with
    /// <paramref name="threadsPerRank"/> torch threads). The overlap is measured over the timed repeats only.
    /// </summary>
    public static LayerTimingResult TimeInProcess(ISequenceParallelAttention method, int worldSize, LayerTimingConfig config,
                                                  int threadsPerRank = 1)
    {
        SequenceLayout.CheckDivisible(config.Seq, worldSize, Layout.Contiguous);
        var options = new AttentionOptions(config.Causal, null, Layout.Contiguous, config.BlockSize);
        var overlap = (method as IOverlapReporting)?.Overlap;
        var usage = default(ProcStatus.Usage);
        var perRank = ProcessGroups.RunInProcess(worldSize, group =>
        {
            var (q, k, v, dO) = Inputs(config, config.Seq / worldSize, seed: group.Rank);
            var times = new List<TimeSpan>();
            for (int i = 0; i < config.Warmup + config.Repeats; i++)
            {
                group.Barrier();
                if (i == config.Warmup)
                {
                    if (group.Rank == 0) overlap?.Reset();   // warm-up done on every rank: count the timed repeats only
                    if (group.Rank == 0) usage = ProcStatus.ProcessUsage();
                    group.Barrier();
                }
                var watch = Stopwatch.StartNew();
                using (var scope = NewDisposeScope())
                {
                    var leaves = new[] { q, k, v }.Select(x => x.detach().requires_grad_(true)).ToArray();
                    method.Forward(group, leaves[0], leaves[1], leaves[2], options).backward([dO]);
                }
                if (i >= config.Warmup) times.Add(watch.Elapsed);
            }
            group.Barrier();
            if (group.Rank == 0) usage = ProcStatus.ProcessUsage() - usage;
            return times;
        }, threadsPerRank: threadsPerRank);
        var slowest = Enumerable.Range(0, config.Repeats).Select(i => perRank.Max(t => t[i])).ToList();
        return Summarize($"{method.Name} W={worldSize} in-process ({threadsPerRank} thread(s)/rank)", slowest, usage, config.Repeats, overlap?.All);
    }

    /// <summary>
    /// The single-device chunked kernel, forward + hand-written backward, on the whole sequence. It runs on a
    /// rank thread of a one-rank group, like the ranks above, so both see the same threading and allocator.
    /// </summary>
    public static LayerTimingResult TimeKernel(LayerTimingConfig config, int threads)
    {
        var times = ProcessGroups.RunInProcess(1, _ =>
        {
            var (q, k, v, dO) = Inputs(config, config.Seq, seed: 0);
            var times = new List<TimeSpan>();
            var usage = default(ProcStatus.Usage);
            for (int i = 0; i < config.Warmup + config.Repeats; i++)
            {
                if (i == config.Warmup) usage = ProcStatus.ProcessUsage();
                var watch = Stopwatch.StartNew();
                using (var scope = NewDisposeScope())
                {
                    // States kept from forward to backward and reused for the backward ones, as LASP-2 does: the same work,
                    // caching policy and memory.
                    var (_, _, seen) = ChunkedLinearAttention.ForwardKeepingStates(q, k, v, null, config.BlockSize, config.Causal);
                    ChunkedLinearAttention.Backward(q, k, v, dO, null, config.BlockSize, config.Causal, seen: config.Causal ? seen : null,
                                                    consumeSeen: true);
                }
                if (i >= config.Warmup) times.Add(watch.Elapsed);
            }
            return (Times: times, Usage: ProcStatus.ProcessUsage() - usage);
        }, threadsPerRank: threads)[0];
        return Summarize($"chunked kernel, single device ({threads} thread(s))", times.Times, times.Usage, config.Repeats, null);
    }

    static (Tensor Q, Tensor K, Tensor V, Tensor DO) Inputs(LayerTimingConfig c, long length, int seed)
    {
        using var generator = new Generator((ulong)(1000 + seed));  // using: alive until the last randn returned (TorchSharp does not keep it alive across the native call)
        Tensor Random() => randn([c.Batch, c.Heads, length, c.Dim], dtype: c.Dtype, generator: generator).Times(1.0 / Math.Sqrt(c.Dim));
        return (Random(), Random(), Random(), Random());
    }

    static LayerTimingResult Summarize(string name, List<TimeSpan> times, ProcStatus.Usage usage, int repeats, OverlapTotals? overlap)
    {
        var sorted = times.Order().ToList();
        return new LayerTimingResult(name, sorted[sorted.Count / 2], sorted[0], TimeSpan.FromSeconds(usage.CpuSeconds / repeats),
                                     TimeSpan.FromSeconds(usage.SystemSeconds / repeats), (double)usage.MinorFaults / repeats, overlap);
    }
}
