using Lasp2.Research;
using Lasp2.Research.Bench;
using Lasp2.Research.Comm;
using Lasp2.Research.Kernels;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// The allocator behaviour the library sets up when it loads (NativeHeap) together with the kernel's bounded
/// temporaries: steady-state iterations reuse freed memory instead of faulting in O(N) fresh pages. Counted, not
/// timed: minor page faults of the thread that runs the kernel (1 libtorch thread, so every page is touched there).
/// </summary>
public class NativeHeapTests(ITestOutputHelper output)
{
    [Fact]
    public void TheLibraryTunesTheAllocatorWhenItLoads()
    {
        // The test host sets no MALLOC_* variables, so the settings must have been applied.
        Assert.Equal("tuned", NativeHeap.State);
    }

    [Fact]
    public void SteadyStateKernelIterationsDoNotFaultInFreshPages()
    {
        const int heads = 2, dim = 64, warmup = 2, iterations = 3;
        const long n = 16384;
        var faults = new Dictionary<long, double>();
        foreach (long length in new[] { n, 4 * n })
            faults[length] = ProcessGroups.RunInProcess(1, _ => FaultsPerIteration(heads, length, dim, warmup, iterations), threadsPerRank: 1)[0];
        // One [1,H,N,D] fp32 tensor in 4 KiB pages: an iteration that allocated its outputs and temporaries fresh would
        // fault in several of these (output, dQ, dK, dV, block states).
        double tensorPages = heads * 4 * n * dim * 4 / 4096.0;
        output.WriteLine($"minor faults per iteration: N={n}: {faults[n]:0}, N={4 * n}: {faults[4 * n]:0}; one [1,{heads},{4 * n},{dim}] tensor = {tensorPages:0} pages; native heap: {NativeHeap.State}");
        Assert.True(faults[4 * n] < tensorPages / 4,
            $"steady-state kernel iterations at N={4 * n} fault in {faults[4 * n]:0} pages per iteration (N={n}: {faults[n]:0}); " +
            $"one [1,{heads},{4 * n},{dim}] tensor is {tensorPages:0} pages, the bound is a quarter of that");
    }

    static double FaultsPerIteration(int heads, long length, int dim, int warmup, int iterations)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var generator = new Generator(7);
        Tensor Random() => randn([1, heads, length, dim], dtype: ScalarType.Float32, generator: generator);
        var (q, k, v, dO) = (Random(), Random(), Random(), Random());
        long before = 0;
        for (int i = 0; i < warmup + iterations; i++)
        {
            if (i == warmup) before = ProcStatus.ThreadUsage().MinorFaults;
            using var iteration = NewDisposeScope();
            var (_, _, seen) = ChunkedLinearAttention.ForwardKeepingStates(q, k, v, null, 64);
            ChunkedLinearAttention.Backward(q, k, v, dO, null, 64, seen: seen);
        }
        return (ProcStatus.ThreadUsage().MinorFaults - before) / (double)iterations;
    }
}
