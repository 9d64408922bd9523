using Lasp2.Reference;
using Lasp2.Research.Attention;
using Microsoft.Data.Analysis;
using TorchSharp;
using static TorchSharp.torch;
using Kernel = Lasp2.Research.Kernels.ChunkedLinearAttention;

namespace Lasp2.Research.Bench;

/// <summary>
/// Where the chunked kernel's time and memory go: each phase of Kernels/ChunkedLinearAttention (causal,
/// lambda = 1) timed alone in thread-CPU time on the calling thread (run it with 1 libtorch thread), with its
/// peak resident-memory increase and what it leaves alive, both in units of one [B,H,N,D] tensor; then the
/// block products alone, as the kernel calls them (one bmm per segment of blocks), the ceiling libtorch reaches on
/// these shapes; the first row is the whole layer (forward and backward with the states kept, the benchmark's caching
/// policy) with its GFLOP/s in the benchmark's flop convention.
/// Used by `lasp2 bench --profile`.
/// </summary>
public static class KernelProfile
{
    /// <summary>Profiles the kernel on random q, k, v, dO [B,H,N,D].</summary>
    /// <param name="batch">B.</param>
    /// <param name="heads">H.</param>
    /// <param name="seqLen">N.</param>
    /// <param name="dim">D = d_k = d_v.</param>
    /// <param name="blockSize">Block length L (&gt;= 1, divides N).</param>
    /// <param name="dtype">Element type.</param>
    /// <param name="repetitions">Timed runs per phase (&gt;= 1); the fastest counts.</param>
    public static DataFrame Run(int batch, int heads, long seqLen, int dim, int blockSize, ScalarType dtype, int repetitions = 3)
    {
        if (blockSize < 1 || seqLen % blockSize != 0)
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, $"block size must be >= 1 and divide N = {seqLen}");
        if (repetitions < 1) throw new ArgumentOutOfRangeException(nameof(repetitions), repetitions, "repetitions must be >= 1");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor Random(params long[] shape) => randn(shape, dtype: dtype).Over(Math.Sqrt(dim));
        var (q, k, v, dO) = (Random(batch, heads, seqLen, dim), Random(batch, heads, seqLen, dim), Random(batch, heads, seqLen, dim), Random(batch, heads, seqLen, dim));
        var lambda = Enumerable.Repeat(1.0, heads).ToArray();
        var forward = Kernel.ForwardStates(k, v, lambda, blockSize, causal: true);
        var backward = Kernel.BackwardStates(q, dO, lambda, blockSize, causal: true);
        long blocks = batch * heads * seqLen / blockSize;
        var (qb, kb) = (q.view(blocks, blockSize, dim), k.view(blocks, blockSize, dim));                 // [B*H*nb,L,D]
        var (states, scores) = (Random(blocks, dim, dim), Random(blocks, blockSize, blockSize));
        // A block product as the kernel calls it: one bmm per segment of n blocks, its result freed before the next.
        long group = Kernel.BlocksPerSegment(blockSize, dim);
        object Segmented(Func<Tensor, Tensor, Tensor> product, Tensor a, Tensor b)
        {
            for (long first = 0; first < blocks; first += group)
            {
                using var segment = NewDisposeScope();
                long n = Math.Min(group, blocks - first);
                product(a.narrow(0, first, n), b.narrow(0, first, n));
            }
            return group;
        }
        double rows = (double)batch * heads, stateFlops = rows * 2.0 * seqLen * dim * dim, blockFlops = rows * 2.0 * seqLen * blockSize * dim;

        double layerFlops = FlopCount.ForwardBackward(FlopAlgorithm.ChunkedLinear, new BenchShape(batch, heads, heads, seqLen, dim, blockSize, true, 1));
        var phases = new (string Name, double Flops, Func<object> Run)[]
        {
            ("layer: forward + backward (states kept)", layerFlops, () =>
            {
                var (output, _, seen) = Kernel.ForwardKeepingStates(q, k, v, null, blockSize);
                return Kernel.Backward(q, k, v, dO, null, blockSize, seen: seen);
            }),
            ("forward: ForwardStates", double.NaN, () => Kernel.ForwardStates(k, v, lambda, blockSize, true)),
            ("forward: IntraOutput", double.NaN, () => Kernel.IntraOutput(q, k, v, forward, lambda, blockSize)),
            ("backward: Kernel.Backward (recomputes the states)", double.NaN, () => Kernel.Backward(q, k, v, dO, null, blockSize, true)),
            ("backward: Kernel.Backward (states kept)", double.NaN, () => Kernel.Backward(q, k, v, dO, null, blockSize, true, seen: forward.Blocks)),
            ("backward: BackwardStates", double.NaN, () => Kernel.BackwardStates(q, dO, lambda, blockSize, true)),
            ("backward: IntraGradients", double.NaN, () => Kernel.IntraGradients(q, k, v, dO, forward, backward, lambda, blockSize)),
            ("product alone: K_b^T V_b", stateFlops, () => Segmented((a, b) => a.transpose(1, 2).bmm(b), kb, kb)),
            ("product alone: Q_b S_{b-1}", stateFlops, () => Segmented((a, b) => a.bmm(b), qb, states)),
            ("product alone: Q_b K_b^T", blockFlops, () => Segmented((a, b) => a.bmm(b.transpose(1, 2)), qb, kb)),
            ("product alone: A_b V_b", blockFlops, () => Segmented((a, b) => a.bmm(b), scores, kb)),
        };
        double tensorBytes = (double)batch * heads * seqLen * dim * (dtype == ScalarType.Float64 ? 8 : 4);
        var measured = phases.Select(p => (p.Name, p.Flops, Measure(p.Run, repetitions))).ToList();
        return new DataFrame(
            new StringDataFrameColumn("phase", measured.Select(m => m.Name)),
            new DoubleDataFrameColumn("cpu_ms", measured.Select(m => 1e3 * m.Item3.Seconds)),
            new DoubleDataFrameColumn("gflops_per_s", measured.Select(m => m.Flops / m.Item3.Seconds / 1e9)),
            new DoubleDataFrameColumn("peak_tensors", measured.Select(m => m.Item3.PeakBytes / tensorBytes)),
            new DoubleDataFrameColumn("live_tensors", measured.Select(m => m.Item3.LiveBytes / tensorBytes)));
    }

    // Fastest thread-CPU time of repeated runs, and the memory of the last one: peak increase, and what its results keep.
    static (double Seconds, long PeakBytes, long LiveBytes) Measure(Func<object> phase, int repetitions)
    {
        double best = double.MaxValue;
        long peak = 0, live = 0;
        for (int i = 0; i <= repetitions; i++)                                            // run 0 warms up
        {
            long baseline = InProcessBenchBackend.MemoryBaseline();
            double start = ProcStatus.ThreadCpuSeconds();
            using (NewDisposeScope())
            {
                phase();
                double seconds = ProcStatus.ThreadCpuSeconds() - start;
                if (i > 0) best = Math.Min(best, seconds);
                live = ProcStatus.ResidentBytes() - baseline;
            }
            peak = ProcStatus.PeakResidentBytes() - baseline;
        }
        return (best, peak, live);
    }
}
