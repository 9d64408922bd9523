using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Kernels;

namespace Lasp2.Research.Simulation;

/// <summary>
/// One attention layer as the simulator sees it: B, H query heads, Hkv KV heads, global length N, Dk, Dv, W ranks,
/// the chunked kernels' block length, mask, layout and bytes per element of the messages. GatherChunks splits
/// LASP-2's state AllGather into that many AllGathers (a what-if of the schedule only; the implementation gathers once).
/// </summary>
public sealed record LayerShape(int Batch, int Heads, int KvHeads, long Seq, int DimK, int DimV, int WorldSize, int BlockSize,
                                bool Causal, Layout Layout, int ElementBytes, int GatherChunks = 1)
{
    /// <summary>C = N / W.</summary>
    public long Local => Seq / WorldSize;

    /// <summary>B H Dk Dv e, one memory state.</summary>
    public long StateBytes => (long)Batch * Heads * DimK * DimV * ElementBytes;

    /// <summary>B Hkv C (Dk + Dv) e, one rank's [K | V] block.</summary>
    public long KeyValueBytes => (long)Batch * KvHeads * Local * (DimK + DimV) * ElementBytes;
}

/// <summary>One rank's forward and backward schedule of one layer.</summary>
public sealed record LayerSchedule(IReadOnlyList<SimEvent> Forward, IReadOnlyList<SimEvent> Backward);

/// <summary>
/// Shapes-only schedules: for each registered method, the phases (flops, <see cref="PhaseFlops"/>) and collectives
/// (bytes, peers, issue and wait order) one rank executes in a layer's forward and backward, written from the
/// method's code. Every method's schedule depends on shapes, mask and layout only, never on values (no branch on
/// data; the skipped causal blocks depend on positions), so it can be replayed for 128 ranks and 2M tokens without
/// running them. property-tests/SimulationTests check each against the schedule the real run records through
/// <see cref="SimulatedProcessGroup"/> on small cases.
/// </summary>
public static class MethodSchedules
{
    /// <summary>The methods with a schedule (the registry names).</summary>
    public static IReadOnlyList<string> Methods { get; } =
        ["lasp2", "lasp1", "ring-linear", "ring-softmax", "allgather-cp", "ulysses-linear", "ulysses-softmax"];

    /// <summary>Rank <paramref name="rank"/>'s schedule of one layer of <paramref name="method"/>.</summary>
    public static LayerSchedule For(string method, LayerShape shape, int rank)
    {
        ArgumentNullException.ThrowIfNull(shape);
        SequenceLayout.CheckDivisible(shape.Seq, shape.WorldSize, shape.Layout);
        if (rank < 0 || rank >= shape.WorldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {shape.WorldSize - 1}].");
        Guards.AtLeast(shape.GatherChunks, 1, "gatherChunks");
        if (shape.GatherChunks > 1 && method != "lasp2")
            throw new ArgumentException($"gatherChunks applies to lasp2 only, not {method}.", nameof(shape));
        return method switch
        {
            "lasp2" => Lasp2(shape),
            "lasp1" => Lasp1(shape, rank),
            "ring-linear" or "ring-softmax" => Ring(shape, rank),
            "allgather-cp" => AllGatherCp(shape, rank),
            "ulysses-linear" or "ulysses-softmax" => Ulysses(shape),
            _ => throw new ArgumentException($"no schedule for method '{method}'; known: {string.Join(", ", Methods)}.", nameof(method)),
        };
    }

    static double Rows(LayerShape s) => (double)s.Batch * s.Heads;

    /// <summary>LASP-2 (Lasp2.cs): states, AllGather issued, diagonal blocks while it flies, wait, state terms.</summary>
    static LayerSchedule Lasp2(LayerShape s)
    {
        int pieces = SequenceLayout.PiecesPerRank(s.Layout);
        long length = s.Local / pieces;
        double rows = Rows(s), state = PhaseFlops.StateProduct(rows, length, s.DimK, s.DimV);
        var forward = new TraceBuilder();
        for (int p = 0; p < pieces; p++) forward.Compute(state);                        // m_p
        // one packet [P, B H Dk Dv + H] (state and gamma per piece)
        long packet = pieces * ((long)s.Batch * s.Heads * s.DimK * s.DimV + s.Heads) * s.ElementBytes;
        var gathers = Chunks(forward, packet, s.GatherChunks);
        for (int p = 0; p < pieces; p++) forward.Compute(PhaseFlops.DiagonalForward(rows, length, s.DimK, s.DimV, s.BlockSize, s.Causal));
        foreach (var g in gathers) forward.Wait(g);
        for (int p = 0; p < pieces; p++) forward.Compute(state);                        // Q_t P_t with the inter-block terms

        var backward = new TraceBuilder();
        for (int p = 0; p < pieces; p++) backward.Compute(2 * state);                   // dQ's state term (it frees the states), dm_p
        gathers = Chunks(backward, pieces * s.StateBytes, s.GatherChunks);
        for (int p = 0; p < pieces; p++) backward.Compute(PhaseFlops.DiagonalBackward(rows, length, s.DimK, s.DimV, s.BlockSize, s.Causal));
        foreach (var g in gathers) backward.Wait(g);
        for (int p = 0; p < pieces; p++) backward.Compute(2 * state);                   // dK, dV state terms
        return new(forward.Events, backward.Events);
    }

    /// <summary>Issues <paramref name="chunks"/> AllGathers splitting <paramref name="bytes"/> (the what-if of Table 5).</summary>
    static int[] Chunks(TraceBuilder trace, long bytes, int chunks) =>
        Enumerable.Range(0, chunks).Select(c => trace.Issue(CollectiveKind.AllGather, bytes / chunks + (c < bytes % chunks ? 1 : 0))).ToArray();

    /// <summary>LASP-1 (Lasp1Ring.cs): per piece in sequence order, local phases, blocking Recv of the prefix, Send of the next.</summary>
    static LayerSchedule Lasp1(LayerShape s, int rank)
    {
        if (!s.Causal) throw new ArgumentException("lasp1 is causal only.", nameof(s));
        int pieces = SequenceLayout.PiecesPerRank(s.Layout);
        long length = s.Local / pieces;
        var owners = SequenceLayout.PieceOwners(s.WorldSize, s.Layout);
        var mine = Enumerable.Range(0, pieces).Select(slot => SequenceLayout.GlobalPiece(rank, slot, s.WorldSize, s.Layout)).ToArray();
        double rows = Rows(s), state = PhaseFlops.StateProduct(rows, length, s.DimK, s.DimV);
        var forward = new TraceBuilder();
        foreach (int piece in mine)
        {
            forward.Compute(state + PhaseFlops.DiagonalForward(rows, length, s.DimK, s.DimV, s.BlockSize, causal: true));
            if (piece > 0 && owners[piece - 1] != rank) forward.Blocking(CollectiveKind.Recv, s.StateBytes, source: owners[piece - 1]);
            if (piece + 1 < owners.Length && owners[piece + 1] != rank)
                forward.Blocking(CollectiveKind.Send, s.StateBytes, destination: owners[piece + 1]);
            forward.Compute(state);
        }
        var backward = new TraceBuilder();
        foreach (int piece in mine.Reverse())
        {
            backward.Compute(2 * state + PhaseFlops.DiagonalBackward(rows, length, s.DimK, s.DimV, s.BlockSize, causal: true));
            if (piece < owners.Length - 1 && owners[piece + 1] != rank)
                backward.Blocking(CollectiveKind.Recv, s.StateBytes, source: owners[piece + 1]);
            if (piece > 0 && owners[piece - 1] != rank) backward.Blocking(CollectiveKind.Send, s.StateBytes, destination: owners[piece - 1]);
            backward.Compute(3 * state);
        }
        return new(forward.Events, backward.Events);
    }

    /// <summary>True when every (query, key) pair of the two ranks' tokens is hidden by the causal mask (the block is skipped).</summary>
    static bool Hidden(LayerShape s, int queryRank, int keyRank)
    {
        if (!s.Causal) return false;
        var queries = SequenceLayout.Pieces(s.Seq, s.WorldSize, queryRank, s.Layout);
        var keys = SequenceLayout.Pieces(s.Seq, s.WorldSize, keyRank, s.Layout);
        return queries.Max(p => p.Start + p.Length - 1) < keys.Min(p => p.Start);
    }

    /// <summary>Ring Attention (Ring.cs): W steps, each SendRecv of the K,V block issued before the block's attention.</summary>
    static LayerSchedule Ring(LayerShape s, int rank)
    {
        int w = s.WorldSize, next = (rank + 1) % w, previous = (rank + w - 1) % w;
        long c = s.Local;
        double rows = Rows(s);
        var forward = new TraceBuilder();
        for (int step = 0; step < w; step++)
        {
            int? incoming = step < w - 1 ? forward.Issue(CollectiveKind.SendRecv, s.KeyValueBytes, next, previous) : null;
            if (!Hidden(s, rank, (rank - step + w) % w)) forward.Compute(PhaseFlops.BlockForward(rows, c, c, s.DimK, s.DimV));
            if (incoming is { } h) forward.Wait(h);
        }
        var backward = new TraceBuilder();
        int? accumulator = null;
        for (int step = 0; step < w; step++)
        {
            int? incoming = step < w - 1 ? backward.Issue(CollectiveKind.SendRecv, s.KeyValueBytes, next, previous) : null;
            if (!Hidden(s, rank, (rank - step + w) % w)) backward.Compute(PhaseFlops.BlockBackward(rows, c, c, s.DimK, s.DimV));
            if (step > 0)
            {
                if (accumulator is { } a) backward.Wait(a);
                accumulator = backward.Issue(CollectiveKind.SendRecv, s.KeyValueBytes, next, previous);   // dK,dV travel behind
            }
            if (incoming is { } h) backward.Wait(h);
        }
        if (accumulator is { } last) backward.Wait(last);
        return new(forward.Events, backward.Events);
    }

    /// <summary>
    /// AllGather-CP (AllGatherContextParallel.cs): AllGather K,V; each of this rank's pieces attends to the keys its mask
    /// can reach (causal: up to the piece's end; unmasked: all N); ReduceScatter dK,dV.
    /// </summary>
    static LayerSchedule AllGatherCp(LayerShape s, int rank)
    {
        double rows = Rows(s);
        var spans = SequenceLayout.Pieces(s.Seq, s.WorldSize, rank, s.Layout)
                                  .Select(p => (Queries: p.Length, Keys: s.Causal ? p.Start + p.Length : s.Seq)).ToList();
        var forward = new TraceBuilder();
        forward.Blocking(CollectiveKind.AllGather, s.KeyValueBytes);
        forward.Compute(spans.Sum(p => PhaseFlops.BlockForward(rows, p.Queries, p.Keys, s.DimK, s.DimV)));
        var backward = new TraceBuilder();
        backward.Compute(spans.Sum(p => PhaseFlops.BlockBackward(rows, p.Queries, p.Keys, s.DimK, s.DimV)));
        backward.Blocking(CollectiveKind.ReduceScatter, s.KeyValueBytes);
        return new(forward.Events, backward.Events);
    }

    /// <summary>Ulysses (Ulysses.cs): AllToAll of Q, K, V to head shards, attention over all N on H/W heads, AllToAll back.</summary>
    static LayerSchedule Ulysses(LayerShape s)
    {
        long tokens = (long)s.Batch * s.Local * s.ElementBytes;                        // bytes per feature of one shard
        double rows = (double)s.Batch * s.Heads / s.WorldSize;
        var forward = new TraceBuilder();
        foreach (long features in new long[] { s.Heads * s.DimK, s.KvHeads * s.DimK, s.KvHeads * s.DimV })
            forward.Blocking(CollectiveKind.AllToAll, tokens * features);
        forward.Compute(PhaseFlops.BlockForward(rows, s.Seq, s.Seq, s.DimK, s.DimV));
        forward.Blocking(CollectiveKind.AllToAll, tokens * s.Heads * s.DimV);
        var backward = new TraceBuilder();
        backward.Blocking(CollectiveKind.AllToAll, tokens * s.Heads * s.DimV);
        backward.Compute(PhaseFlops.BlockBackward(rows, s.Seq, s.Seq, s.DimK, s.DimV));
        foreach (long features in new long[] { s.Heads * s.DimK, s.KvHeads * s.DimK, s.KvHeads * s.DimV })
            backward.Blocking(CollectiveKind.AllToAll, tokens * features);
        return new(forward.Events, backward.Events);
    }
}
