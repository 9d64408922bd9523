using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using static TorchSharp.torch;

namespace Lasp2.Research.Verification;

/// <summary>
/// Rank threads under a garbage collector that never rests: the condition in which a native TorchSharp object that
/// nothing references any more is freed while libtorch still reads it, a Scalar made implicitly from a C# number
/// (see <see cref="Scalars"/>) or a tensor no dispose scope holds. A background thread runs GC.Collect +
/// WaitForPendingFinalizers in a loop while (1) the softmax methods (which mask with -inf) run forward and backward
/// on 8 in-process ranks against the reference, (2) two threads call <see cref="Scalars.MaskedFill"/> on a large
/// tensor, whose native call is long enough for a collection to land inside it, and (3) AllGather-CP runs forward
/// on 8 ranks whose bodies open no dispose scope (its gathered keys and values are unreachable once their unbind(0)
/// has read the handle; without the scope every rank body runs in, the process dies in libtorch's unbind). The race
/// needs fully optimised code (the JIT ends a local's lifetime at its last use), so run it with tiered compilation off:
/// DOTNET_TieredCompilation=0 (ScalarLifetimeStressTests starts it that way).
/// </summary>
public static class ScalarStress
{
    /// <summary>What ran and what failed (each failure one line).</summary>
    public sealed record Result(int Checks, int MaskedFills, int UnscopedRuns, IReadOnlyList<string> Failures);

    /// <summary>The methods that mask scores with -inf and merge with log-sum-exp.</summary>
    public static readonly string[] SoftmaxMethods = ["ring-softmax", "allgather-cp", "ulysses-softmax"];

    /// <summary>
    /// Runs every softmax method <paramref name="repeats"/> times at W = 8, <paramref name="maskedFills"/> masked fills per
    /// thread and <paramref name="unscopedRuns"/> runs of unscoped AllGather-CP forwards, under forced collections.
    /// </summary>
    public static Result Run(int repeats, int maskedFills, int unscopedRuns)
    {
        Guards.AtLeast(repeats, 1, nameof(repeats));
        Guards.AtLeast(maskedFills, 1, nameof(maskedFills));
        Guards.AtLeast(unscopedRuns, 1, nameof(unscopedRuns));
        var failures = new List<string>();
        int checks = 0, fills = 0, unscoped = 0;
        using (new ForcedCollections())
        {
            foreach (var method in SoftmaxMethods)
                for (int i = 0; i < repeats; i++)
                {
                    var config = new DistributedCheckConfig(method, WorldSize: 8, Heads: 8, KvHeads: 8, Decay: 1.0, Seed: 20250211 + i);
                    try
                    {
                        foreach (var check in DistributedChecks.RunInProcess(config).SelectMany(r => r.Checks))
                        {
                            checks++;
                            if (!check.Passed) failures.Add($"{config.Label} {check.Name} {check.Quantity}: max relative error {check.Error.MaxRel:g3} (tolerance {check.Tolerance:g3})");
                        }
                    }
                    catch (Exception error)
                    {
                        failures.Add($"{config.Label}: {FirstLine(error)}");
                    }
                }
            fills = MaskedFills(maskedFills, failures);
            unscoped = UnscopedForwards(unscopedRuns, failures);
        }
        return new Result(checks, fills, unscoped, failures);
    }

    /// <summary>Runs of 8 ranks, each rank 10 AllGather-CP forwards with no dispose scope of its own; returns the runs that finished.</summary>
    static int UnscopedForwards(int runs, List<string> failures)
    {
        using var scope = NewDisposeScope();
        var method = MethodRegistry.Get("allgather-cp");
        var options = new AttentionOptions(Causal: true);
        var inputs = Enumerable.Range(0, 8).Select(_ => randn(2, 4, 16, 8, dtype: float64)).ToArray(); // q = k = v, [B,H,C,D] per rank
        int done = 0;
        for (int run = 0; run < runs; run++)
        {
            try
            {
                ProcessGroups.RunInProcess(8, group =>
                {
                    var x = inputs[group.Rank];
                    for (int i = 0; i < 10; i++) method.Forward(group, x, x, x, options);
                }, threadsPerRank: 1);
                done++;
            }
            catch (Exception error)
            {
                failures.Add($"unscoped allgather-cp forwards, run {run}: {FirstLine(error)}");
            }
        }
        return done;
    }

    /// <summary>Two threads, each filling a 2048 x 2048 float64 tensor (32 MiB: a native call of milliseconds) through a mask.</summary>
    static int MaskedFills(int perThread, List<string> failures)
    {
        const double value = -1.5;
        using var target = zeros(2048, 2048, dtype: float64);
        using var mask = ones(2048, 2048, dtype: @bool);
        int done = 0;
        var threads = Enumerable.Range(0, 2).Select(t => new Thread(() =>
        {
            for (int i = 0; i < perThread; i++)
            {
                try
                {
                    using var scope = NewDisposeScope();
                    double read = target.MaskedFill(mask, value)[0, 0].item<double>();
                    if (read != value) lock (failures) failures.Add($"masked fill thread {t} call {i}: read {read}, filled {value}");
                }
                catch (Exception error)
                {
                    lock (failures) failures.Add($"masked fill thread {t} call {i}: {FirstLine(error)}");
                }
                Interlocked.Increment(ref done);
            }
        })).ToList();
        threads.ForEach(thread => thread.Start());
        threads.ForEach(thread => thread.Join());
        return done;
    }

    static string FirstLine(Exception error) => error.Message.Split('\n')[0].Trim();

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
}
