using Lasp2.Research.Attention;
using Lasp2.Research.Verification;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// Rank threads under a garbage collector that never rests. A TorchSharp Scalar made implicitly from a
/// C# number is unreachable once its handle is passed to native code, so a collection on another thread
/// can finalize (free) it while libtorch still reads it: "Expected false to be true" from
/// c10::Scalar::toDouble, or a wrong value. A background thread here runs GC.Collect +
/// WaitForPendingFinalizers in a loop, which turns that once-in-many-runs race into a frequent one.
/// </summary>
public class ScalarLifetimeStressTests
{
    /// <summary>Forces full collections and runs finalizers on a background thread until disposed.</summary>
    sealed class ForcedCollections : IDisposable
    {
        volatile bool stop;
        readonly Thread thread;

        public ForcedCollections()
        {
            thread = new Thread(() =>
            {
                while (!stop)
                {
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                }
            }) { IsBackground = true, Name = "forced collections" };
            thread.Start();
        }

        public void Dispose()
        {
            stop = true;
            thread.Join();
        }
    }

    /// <summary>The three softmax methods (the ones that mask with -inf) on 8 ranks, forward + backward, all equal the reference.</summary>
    [Theory]
    [InlineData("ring-softmax", 3)]
    [InlineData("allgather-cp", 3)]
    [InlineData("ulysses-softmax", 3)]
    public void SoftmaxMethodsOnEightRanksEqualTheReferenceUnderForcedCollections(string method, int repeats)
    {
        using var collections = new ForcedCollections();
        for (int i = 0; i < repeats; i++)
        {
            var config = new DistributedCheckConfig(method, WorldSize: 8, Heads: 8, KvHeads: 8, Decay: 1.0, Seed: 20250211 + i);
            foreach (var check in DistributedChecks.RunInProcess(config).SelectMany(r => r.Checks))
                Assert.True(check.Passed, $"{check.Name} {check.Quantity}: {check.Error}");
        }
    }

    /// <summary>
    /// The block kernels (masked scores, lse merge, backward) on 8 threads at once, many times each, give
    /// bit for bit what one thread computed before the collector started.
    /// </summary>
    [Fact]
    public void BlockKernelsOnEightThreadsGiveTheSameBitsUnderForcedCollections()
    {
        const int threads = 8, iterations = 400;
        var kernel = new OnlineSoftmax(causal: true, scale: 0.25);
        var generator = new Generator(20250211);
        var (q, k, v, dO) = (randn([1, 2, 6, 4], dtype: float64, generator: generator), randn([1, 2, 6, 4], dtype: float64, generator: generator),
                             randn([1, 2, 6, 4], dtype: float64, generator: generator), randn([1, 2, 6, 4], dtype: float64, generator: generator));
        var (queryPositions, keyPositions) = (arange(6, 12), arange(3, 9));
        byte[] Run()
        {
            using var scope = NewDisposeScope();
            var block = kernel.Forward(q, k, v, queryPositions, keyPositions)!;
            var merged = kernel.Merge(block, block);
            var grads = kernel.Backward(q, k, v, queryPositions, keyPositions, dO, merged);
            return cat([merged.Output, merged.Lse!.expand(-1, -1, -1, 4), grads.DQ, grads.DK, grads.DV], -1).contiguous().bytes.ToArray();
        }
        var expected = Run();
        var failures = new List<string>();
        using (var collections = new ForcedCollections())
        {
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
            {
                set_num_threads(1);
                for (int i = 0; i < iterations; i++)
                {
                    try
                    {
                        if (!Run().SequenceEqual(expected)) lock (failures) failures.Add($"thread {t} iteration {i}: different bits");
                    }
                    catch (Exception error)
                    {
                        lock (failures) failures.Add($"thread {t} iteration {i}: {error.Message.Split('\n')[0]}");
                    }
                }
            })).ToList();
            workers.ForEach(w => w.Start());
            workers.ForEach(w => w.Join());
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {threads * iterations} runs failed; first: {failures.FirstOrDefault()}");
    }
}
