using Lasp2.Reference;
using Lasp2.Research.Comm;

namespace Lasp2.Research.Attention;

/// <summary>
/// The problem a communication prediction is for: batch B, query heads H, KV heads Hkv, global length N,
/// head dimensions Dk and Dv, world size W, bytes per element, layout and mask, and the recurrence of a linear
/// layer (null: the constant decay). C = N / W.
/// </summary>
public sealed record CommShape(int Batch, int Heads, int KvHeads, long Seq, int DimK, int DimV, int WorldSize,
                               int ElementSize, Layout Layout, bool Causal, Recurrence? Recurrence = null)
{
    /// <summary>The recurrence, the constant decay when none is given.</summary>
    public Recurrence RecurrenceOrDecay => Recurrence ?? Lasp2.Reference.Recurrence.Decay;

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
    /// <summary>No communication at all (a single-device method).</summary>
    public static DirectionPrediction None { get; } = new([], 0);

    /// <summary>A direction of <paramref name="steps"/> sequential steps; kinds with no calls are left out.</summary>
    public static DirectionPrediction Of(long steps, params (string Kind, long Calls, long Sent, long Received)[] calls) =>
        new(calls.Where(c => c.Calls > 0).Select(c => new CommCallPrediction(c.Kind, c.Calls, c.Sent, c.Received)).ToList(),
            steps);

    /// <summary>Bytes sent over every kind.</summary>
    public long BytesSent => Calls.Sum(c => c.BytesSent);

    /// <summary>Bytes received over every kind.</summary>
    public long BytesReceived => Calls.Sum(c => c.BytesReceived);
}

/// <summary>Forward and backward prediction for one rank.</summary>
public sealed record CommPrediction(string Method, int Rank, DirectionPrediction Forward, DirectionPrediction Backward);

/// <summary>
/// The analytic communication model: per rank and per direction, calls and bytes sent / received under the
/// backends' ring accounting (<see cref="CommVolume"/>: AllGather and ReduceScatter move (W-1) blocks each
/// way, AllToAll (W-1)/W of its input, a SendRecv its tensor each way, nothing at W = 1), and the sequential
/// steps. Each method states its own row (<see cref="ISequenceParallelAttention.PredictComm"/>); this is the
/// checked entry point, the communication table of docs/algorithms.md made exact.
/// </summary>
public static class CommModel
{
    /// <summary>The prediction for the registered method called <paramref name="method"/> on <paramref name="rank"/>.</summary>
    public static CommPrediction Predict(string method, CommShape shape, int rank) =>
        Predict(MethodRegistry.Get(method), shape, rank);

    /// <summary>The prediction for <paramref name="method"/> on <paramref name="rank"/>, after checking the shape and rank.</summary>
    public static CommPrediction Predict(ISequenceParallelAttention method, CommShape shape, int rank)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(shape);
        SequenceLayout.CheckDivisible(shape.Seq, shape.WorldSize, shape.Layout);
        if (rank < 0 || rank >= shape.WorldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {shape.WorldSize - 1}].");
        if (shape.RecurrenceOrDecay != Recurrence.Decay && !method.Recurrences.Contains(shape.RecurrenceOrDecay))
            throw new ArgumentException($"{method.Name} does not run the {shape.RecurrenceOrDecay.Name} recurrence.", nameof(shape));
        return method.PredictComm(shape, rank);
    }
}
