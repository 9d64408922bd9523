using System.Diagnostics;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>
/// A process group told what its rank computes between collectives: a recorder puts the phases in the same
/// stream as the collectives, a simulated cluster could time them. Methods report phases through
/// <c>OverlapWindow</c>; a group that does not implement this interface is not told.
/// </summary>
public interface IComputePhases
{
    /// <summary>This rank starts the computation <paramref name="phase"/>.</summary>
    void PhaseBegan(string phase);

    /// <summary>This rank finished the computation <paramref name="phase"/>.</summary>
    void PhaseEnded(string phase);
}

/// <summary>What happened on one rank, in the order it happened.</summary>
public enum RankEventKind
{
    /// <summary>A collective was called (a blocking one is followed by its <see cref="Completed"/> at once).</summary>
    Issued,
    /// <summary>Wait was called on an asynchronous collective.</summary>
    Waiting,
    /// <summary>The collective's result was returned to the rank.</summary>
    Completed,
    /// <summary>A computation phase started.</summary>
    PhaseBegan,
    /// <summary>A computation phase finished.</summary>
    PhaseEnded,
}

/// <summary>
/// One event of a rank: <paramref name="Name"/> is the collective kind (<see cref="CommKind"/>) or the phase;
/// <paramref name="Collective"/> numbers this rank's collectives from 0 in issue order (-1 for phases);
/// <paramref name="Bytes"/> are the collective's bytes by <see cref="CommVolume"/> (on <see cref="RankEventKind.Issued"/>);
/// <paramref name="At"/> is the time since the recording started.
/// </summary>
public readonly record struct RankEvent(RankEventKind Kind, string Name, int Collective, CommBytes Bytes, TimeSpan At)
{
    public override string ToString() => Kind switch
    {
        RankEventKind.Issued => $"{Kind} {Name} #{Collective} ({Bytes.Sent} B sent, {Bytes.Received} B received)",
        RankEventKind.Waiting or RankEventKind.Completed => $"{Kind} {Name} #{Collective}",
        _ => $"{Kind} {Name}",
    };
}

/// <summary>
/// Decorator that records, for its rank, the ordered stream of collectives issued, waited for and completed, and
/// the computation phases the method reports (<see cref="IComputePhases"/>); everything else is forwarded to the
/// inner group unchanged. One instance per rank; sub-groups from <see cref="Split"/> append to the same stream.
/// It does not own the group it wraps (only the sub-groups it created).
/// </summary>
public sealed class RecordingProcessGroup : IProcessGroup, IComputePhases
{
    readonly IProcessGroup inner;
    readonly bool ownsInner;
    readonly Recording recording;

    /// <summary>Records the events of <paramref name="inner"/>'s rank from now on.</summary>
    public RecordingProcessGroup(IProcessGroup inner) : this(inner, ownsInner: false, new Recording()) { }

    RecordingProcessGroup(IProcessGroup inner, bool ownsInner, Recording recording)
    {
        ArgumentNullException.ThrowIfNull(inner);
        (this.inner, this.ownsInner, this.recording) = (inner, ownsInner, recording);
    }

    /// <summary>This rank's events so far, in order.</summary>
    public IReadOnlyList<RankEvent> Events => recording.Snapshot();

    public int Rank => inner.Rank;
    public int WorldSize => inner.WorldSize;
    public CommStats Stats => inner.Stats;

    public void PhaseBegan(string phase) => recording.Add(RankEventKind.PhaseBegan, phase);
    public void PhaseEnded(string phase) => recording.Add(RankEventKind.PhaseEnded, phase);

    public Tensor AllGather(Tensor input) =>
        Blocking(CommKind.AllGather, CommVolume.AllGather(WorldSize, CommArgs.Bytes(input)), () => inner.AllGather(input));

    public ICommHandle AllGatherAsync(Tensor input) =>
        Async(CommKind.AllGather, CommVolume.AllGather(WorldSize, CommArgs.Bytes(input)), () => inner.AllGatherAsync(input));

    public Tensor AllReduce(Tensor input, ReduceOp op = ReduceOp.Sum) =>
        Blocking(CommKind.AllReduce, CommVolume.AllReduce(WorldSize, CommArgs.Bytes(input)), () => inner.AllReduce(input, op));

    public Tensor ReduceScatter(Tensor input) =>
        Blocking(CommKind.ReduceScatter, CommVolume.ReduceScatter(WorldSize, CommArgs.Bytes(input)), () => inner.ReduceScatter(input));

    public ICommHandle ReduceScatterAsync(Tensor input) =>
        Async(CommKind.ReduceScatter, CommVolume.ReduceScatter(WorldSize, CommArgs.Bytes(input)), () => inner.ReduceScatterAsync(input));

    public Tensor AllToAll(Tensor input, int splitDim, int concatDim) =>
        Blocking(CommKind.AllToAll, CommVolume.AllToAll(WorldSize, CommArgs.Bytes(input)), () => inner.AllToAll(input, splitDim, concatDim));

    public Tensor Broadcast(Tensor input, int root) =>
        Blocking(CommKind.Broadcast, CommVolume.Broadcast(WorldSize, Rank, root, CommArgs.Bytes(input)), () => inner.Broadcast(input, root));

    public void Send(Tensor input, int destination) =>
        Blocking(CommKind.Send, CommVolume.Send(Rank, destination, CommArgs.Bytes(input)), () => { inner.Send(input, destination); return 0; });

    public Tensor Recv(long[] shape, ScalarType dtype, int source)
    {
        using var element = empty(0, dtype: dtype);
        long bytes = shape.Aggregate(1L, (n, extent) => n * extent) * element.ElementSize;
        return Blocking(CommKind.Recv, CommVolume.Recv(Rank, source, bytes), () => inner.Recv(shape, dtype, source));
    }

    public Tensor SendRecv(Tensor input, int destination, int source) =>
        Blocking(CommKind.SendRecv, CommVolume.SendRecv(Rank, destination, source, CommArgs.Bytes(input)),
                 () => inner.SendRecv(input, destination, source));

    public ICommHandle SendRecvAsync(Tensor input, int destination, int source) =>
        Async(CommKind.SendRecv, CommVolume.SendRecv(Rank, destination, source, CommArgs.Bytes(input)),
              () => inner.SendRecvAsync(input, destination, source));

    public void Barrier() => Blocking(CommKind.Barrier, default, () => { inner.Barrier(); return 0; });

    public IProcessGroup Split(int color, int key) =>
        new RecordingProcessGroup(Blocking("Split", default, () => inner.Split(color, key)), ownsInner: true, recording);

    public void Dispose()
    {
        if (ownsInner) inner.Dispose();
    }

    T Blocking<T>(string kind, CommBytes bytes, Func<T> call)
    {
        int id = recording.Issue(kind, bytes);
        var result = call();
        recording.Add(RankEventKind.Completed, kind, id);
        return result;
    }

    ICommHandle Async(string kind, CommBytes bytes, Func<ICommHandle> issue)
    {
        int id = recording.Issue(kind, bytes);
        return new RecordedHandle(issue(), kind, id, recording);
    }

    sealed class RecordedHandle(ICommHandle inner, string kind, int id, Recording recording) : ICommHandle
    {
        public bool IsCompleted => inner.IsCompleted;

        public Tensor Wait()
        {
            recording.Add(RankEventKind.Waiting, kind, id);
            var result = inner.Wait();
            recording.Add(RankEventKind.Completed, kind, id);
            return result;
        }
    }

    /// <summary>One rank's stream (a lock, because a handle may be waited on from another thread).</summary>
    sealed class Recording
    {
        readonly object gate = new();
        readonly List<RankEvent> events = [];
        readonly long start = Stopwatch.GetTimestamp();
        int collectives;

        public int Issue(string kind, CommBytes bytes)
        {
            lock (gate)
            {
                int id = collectives++;
                events.Add(new RankEvent(RankEventKind.Issued, kind, id, bytes, Stopwatch.GetElapsedTime(start)));
                return id;
            }
        }

        public void Add(RankEventKind kind, string name, int collective = -1)
        {
            lock (gate) events.Add(new RankEvent(kind, name, collective, default, Stopwatch.GetElapsedTime(start)));
        }

        public IReadOnlyList<RankEvent> Snapshot()
        {
            lock (gate) return events.ToList();
        }
    }
}
