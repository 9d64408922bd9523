using Lasp2.Reference;
using Lasp2.Research.Comm;

namespace Lasp2.Research.Attention;

/// <summary>
/// The problem a communication prediction is for: batch B, query heads H, KV heads Hkv, global length N,
/// head dimensions Dk and Dv, world size W, bytes per element, layout and mask. C = N / W.
/// </summary>
public sealed record CommShape(int Batch, int Heads, int KvHeads, long Seq, int DimK, int DimV, int WorldSize,
                               int ElementSize, Layout Layout, bool Causal)
{
    /// <summary>C = N / W, the local length.</summary>
    public long Local => Seq / WorldSize;

    /// <summary>S = B H Dk Dv e, one memory state in bytes.</summary>
    public long StateBytes => (long)Batch * Heads * DimK * DimV * ElementSize;

    /// <summary>One rank's [K | V] block in bytes: B Hkv C (Dk + Dv) e.</summary>
    public long KeyValueBytes => Batch * KvHeads * Local * (DimK + DimV) * ElementSize;
}

/// <summary>Predicted calls and bytes of one collective kind on one rank, for one direction.</summary>
public sealed record CommCallPrediction(string Kind, long Calls, long BytesSent, long BytesReceived);

/// <summary>
/// One direction (forward or backward) on one rank: the calls per kind and the sequential communication
/// steps, i.e. communication rounds on the critical path (calls started together and overlapping count
/// once; for a chain, the hops of the whole chain, which every rank waits through).
/// </summary>
public sealed record DirectionPrediction(IReadOnlyList<CommCallPrediction> Calls, long SequentialSteps)
{
    /// <summary>Bytes sent over every kind.</summary>
    public long BytesSent => Calls.Sum(c => c.BytesSent);

    /// <summary>Bytes received over every kind.</summary>
    public long BytesReceived => Calls.Sum(c => c.BytesReceived);
}

/// <summary>Forward and backward prediction for one rank.</summary>
public sealed record CommPrediction(string Method, int Rank, DirectionPrediction Forward, DirectionPrediction Backward);

/// <summary>
/// The analytic communication model of every registered method: per rank and per direction, calls and
/// bytes sent / received under the backends' ring accounting (<see cref="CommVolume"/>: AllGather and
/// ReduceScatter move (W-1) blocks each way, AllToAll (W-1)/W of its input, a SendRecv its tensor each
/// way, nothing at W = 1), and the sequential steps. It is the communication table of docs/algorithms.md made
/// exact (S = B H Dk Dv e; a KV block = B Hkv C (Dk + Dv) e):
/// <list type="bullet">
/// <item>lasp2: one AllGather of P states per rank per direction (P = 1 contiguous, 2 zigzag pieces), the forward one with each
/// piece's H decays beside its state: (W-1) P (S + H e) forward, (W-1) P S backward, each way; 1 step.</item>
/// <item>lasp1: a chain of states over the pieces in sequence order; each hop between ranks is one Send and one Recv of S;
/// W-1 hops contiguous, 2(W-1) zigzag, per direction.</item>
/// <item>ring-softmax, ring-linear: forward W-1 SendRecvs of the KV block, W-1 steps; backward 2(W-1) (KV blocks and their
/// dK,dV accumulators), in W rounds (the accumulators' last hop home adds one).</item>
/// <item>allgather-cp: forward one AllGather of the KV block, backward one ReduceScatter of it: (W-1) KV block each way; 1 step.</item>
/// <item>ulysses-*: 4 AllToAlls per direction of Q, K, V, O (forward) or dO, dQ, dK, dV (backward): (W-1)/W of
/// B C e (H Dk + Hkv Dk + Hkv Dv + H Dv) each way; 4 steps.</item>
/// </list>
/// </summary>
public static class CommModel
{
    /// <summary>The methods the model covers (the registry names).</summary>
    public static IReadOnlyList<string> Methods { get; } =
        ["lasp2", "lasp1", "ring-linear", "ring-softmax", "allgather-cp", "ulysses-linear", "ulysses-softmax"];

    /// <summary>The prediction for <paramref name="method"/> on <paramref name="rank"/>.</summary>
    public static CommPrediction Predict(string method, CommShape shape, int rank)
    {
        ArgumentNullException.ThrowIfNull(shape);
        SequenceLayout.CheckDivisible(shape.Seq, shape.WorldSize, shape.Layout);
        if (rank < 0 || rank >= shape.WorldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {shape.WorldSize - 1}].");
        long w = shape.WorldSize;
        switch (method)
        {
            case "lasp2":
            {
                // forward gathers each piece's gamma = lambda^length [H] beside its state (unequal shards stay exact)
                long pieces = SequenceLayout.PiecesPerRank(shape.Layout);
                long forward = (w - 1) * pieces * (shape.StateBytes + (long)shape.Heads * shape.ElementSize);
                long backward = (w - 1) * pieces * shape.StateBytes;
                return new(method, rank, Direction(1, (CommKind.AllGather, 1, forward, forward)),
                                         Direction(1, (CommKind.AllGather, 1, backward, backward)));
            }
            case "lasp1":
            {
                // forward: prefixes travel up the chain; backward: suffix gradients travel down it
                var (sends, receives, hops) = ChainHops(shape, rank);
                return new(method, rank,
                    Direction(hops, (CommKind.Send, sends, sends * shape.StateBytes, 0),
                                    (CommKind.Recv, receives, 0, receives * shape.StateBytes)),
                    Direction(hops, (CommKind.Send, receives, receives * shape.StateBytes, 0),
                                    (CommKind.Recv, sends, 0, sends * shape.StateBytes)));
            }
            case "ring-linear" or "ring-softmax":
            {
                long block = shape.KeyValueBytes;
                return new(method, rank,
                    Direction(w - 1, (CommKind.SendRecv, w - 1, (w - 1) * block, (w - 1) * block)),
                    Direction(w == 1 ? 0 : w, (CommKind.SendRecv, 2 * (w - 1), 2 * (w - 1) * block, 2 * (w - 1) * block)));
            }
            case "allgather-cp":
            {
                long bytes = (w - 1) * shape.KeyValueBytes;
                return new(method, rank, Direction(1, (CommKind.AllGather, 1, bytes, bytes)),
                                         Direction(1, (CommKind.ReduceScatter, 1, bytes, bytes)));
            }
            case "ulysses-linear" or "ulysses-softmax":
            {
                long perToken = (long)shape.Batch * shape.ElementSize;
                long[] tensors = [shape.Heads * shape.DimK, shape.KvHeads * shape.DimK, shape.KvHeads * shape.DimV, shape.Heads * shape.DimV];
                // AllToAll of B bytes moves (W-1) (B / W) each way; B / W = B C e x / W over the local tokens.
                long bytes = tensors.Sum(x => (w - 1) * (perToken * shape.Local * x / w));
                var allToAll = Direction(4, (CommKind.AllToAll, 4, bytes, bytes));
                return new(method, rank, allToAll, allToAll);
            }
            default:
                throw new ArgumentException(
                    $"no communication model for method '{method}'; known: {string.Join(", ", Methods)}.", nameof(method));
        }
    }

    /// <summary>
    /// LASP-1's chain over the pieces in sequence order: a hop whenever consecutive pieces live on
    /// different ranks. Returns this rank's sends and receives and the chain's total hops.
    /// </summary>
    static (long Sends, long Receives, long Hops) ChainHops(CommShape shape, int rank)
    {
        var owners = SequenceLayout.PieceOwners(shape.WorldSize, shape.Layout);
        long sends = 0, receives = 0, hops = 0;
        for (int piece = 1; piece < owners.Length; piece++)
        {
            if (owners[piece - 1] == owners[piece]) continue;
            hops++;
            if (owners[piece - 1] == rank) sends++;
            if (owners[piece] == rank) receives++;
        }
        return (sends, receives, hops);
    }

    static DirectionPrediction Direction(long steps, params (string Kind, long Calls, long Sent, long Received)[] calls) =>
        new(calls.Where(c => c.Calls > 0).Select(c => new CommCallPrediction(c.Kind, c.Calls, c.Sent, c.Received)).ToList(),
            steps);
}
