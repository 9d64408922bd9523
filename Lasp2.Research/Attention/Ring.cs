using Lasp2.Reference;
using System.Diagnostics;
using Lasp2.Research.Comm;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// The ring every Ring Attention variant uses: rank r sends to r+1 and receives from r-1 (mod W).
/// Each step sends the current block on (SendRecvAsync) before computing with it, then waits, so the
/// transfer overlaps the block computation (recorded per step in an optional <see cref="OverlapLog"/>).
/// W = 1 visits its own block and never communicates.
/// </summary>
public static class Ring
{
    /// <summary>Rank r+1 mod W.</summary>
    public static int Next(IProcessGroup group) => (group.Rank + 1) % group.WorldSize;

    /// <summary>Rank r-1 mod W.</summary>
    public static int Previous(IProcessGroup group) => (group.Rank + group.WorldSize - 1) % group.WorldSize;

    /// <summary>
    /// Calls <paramref name="visit"/>(block, owner) once for every rank's block, own block first; step s
    /// holds the block of rank r - s. W - 1 SendRecv steps of one block each.
    /// </summary>
    public static void Visit(IProcessGroup group, Tensor block, Action<Tensor, int> visit, OverlapLog? overlap = null)
    {
        int worldSize = group.WorldSize;
        var current = block;
        for (int step = 0; step < worldSize; step++)
        {
            var incoming = step < worldSize - 1 ? group.SendRecvAsync(current, Next(group), Previous(group)) : null;
            var compute = Stopwatch.StartNew();
            visit(current, (group.Rank - step + worldSize) % worldSize);
            if (incoming is not null) current = Wait(incoming, compute, overlap, "forward");
        }
    }

    /// <summary>
    /// Like <see cref="Visit"/>, but <paramref name="visit"/> returns this rank's gradient contribution to
    /// the visited block, and the result is the sum of every rank's contributions to this rank's own block.
    /// The accumulator of a block is created by the rank after its owner, travels the ring behind the block
    /// (one SendRecv per step, overlapped with the next step) and comes home after W - 1 hops; the owner's
    /// own contribution never leaves. So 2 (W - 1) SendRecvs: W - 1 of blocks, W - 1 of accumulators.
    /// </summary>
    public static Tensor VisitAccumulate(IProcessGroup group, Tensor block, Func<Tensor, int, Tensor> visit, OverlapLog? overlap = null)
    {
        int worldSize = group.WorldSize;
        var current = block;
        Tensor? own = null;
        ICommHandle? accumulator = null;
        for (int step = 0; step < worldSize; step++)
        {
            var incoming = step < worldSize - 1 ? group.SendRecvAsync(current, Next(group), Previous(group)) : null;
            var compute = Stopwatch.StartNew();
            var contribution = visit(current, (group.Rank - step + worldSize) % worldSize);
            if (step == 0) own = contribution;
            else
            {
                // step s holds the accumulator of rank r - s, which left rank r - s + 1 one step earlier.
                var sum = accumulator is null ? contribution : Wait(accumulator, compute, overlap, "backward").Plus(contribution);
                accumulator = group.SendRecvAsync(sum, Next(group), Previous(group));
                compute.Restart();
            }
            if (incoming is not null) current = Wait(incoming, compute, overlap, "backward");
        }
        return accumulator is null ? own! : own!.Plus(Wait(accumulator, Stopwatch.StartNew(), overlap, "backward"));
    }

    /// <summary>Waits for <paramref name="handle"/> and records the computation done since <paramref name="compute"/> started.</summary>
    static Tensor Wait(ICommHandle handle, Stopwatch compute, OverlapLog? overlap, string direction)
    {
        var computed = compute.Elapsed;
        var waiting = Stopwatch.StartNew();
        var result = handle.Wait();
        overlap?.Record(direction, computed, waiting.Elapsed);
        return result;
    }
}
