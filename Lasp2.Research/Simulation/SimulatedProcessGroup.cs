using Lasp2.Research.Comm;
using Lasp2.Research.Kernels;
using static TorchSharp.torch;

namespace Lasp2.Research.Simulation;

/// <summary>
/// The simulated network shared by the ranks of one in-process run: each rank's
/// <see cref="SimulatedProcessGroup"/> records its schedule here; after the run, <see cref="Replay"/> gives
/// every rank's virtual time on <see cref="Topology"/>.
/// </summary>
public sealed class SimulatedNetwork
{
    readonly TraceBuilder[] traces;

    public SimulatedNetwork(Topology topology, int worldSize)
    {
        Cost = new CostModel(topology, worldSize);
        traces = Enumerable.Range(0, worldSize).Select(_ => new TraceBuilder()).ToArray();
    }

    public CostModel Cost { get; }

    /// <summary>Rank <paramref name="rank"/>'s schedule as recorded so far.</summary>
    public IReadOnlyList<SimEvent> Schedule(int rank) => traces[rank].Events;

    internal TraceBuilder Trace(int rank) => traces[rank];

    /// <summary>Every rank's virtual time (call once every rank has finished).</summary>
    public RankTime[] Replay() =>
        VirtualClock.Replay(traces.Select(t => t.Events).ToList(), Cost, Cost.Topology.Device.FlopsPerSecond);
}

/// <summary>
/// A decorator around any <see cref="IProcessGroup"/> of an in-process run: every collective runs for real on the
/// inner group (values, results and <see cref="Stats"/> unchanged) and is recorded, with the flops the kernels
/// executed on this rank's thread since the previous collective (<see cref="ComputeMeter"/>), in this rank's
/// schedule on the shared <see cref="SimulatedNetwork"/>, which prices it on a topology
/// (<see cref="CostModel"/>, <see cref="VirtualClock"/>). Asynchronous collectives are recorded at issue and at
/// Wait, so the replay overlaps exactly what the method computed in between. Models the world group only
/// (<see cref="Split"/> is refused). Does not own the inner group.
/// </summary>
public sealed class SimulatedProcessGroup : IProcessGroup
{
    readonly IProcessGroup inner;
    readonly TraceBuilder trace;
    double metered;

    public SimulatedProcessGroup(IProcessGroup inner, SimulatedNetwork network)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(network);
        if (network.Cost.WorldSize != inner.WorldSize)
            throw new ArgumentException($"the network has {network.Cost.WorldSize} ranks, the group {inner.WorldSize}.", nameof(network));
        this.inner = inner;
        trace = network.Trace(inner.Rank);
        metered = ComputeMeter.Flops;
    }

    public int Rank => inner.Rank;
    public int WorldSize => inner.WorldSize;
    public CommStats Stats => inner.Stats;

    /// <summary>
    /// Charges the flops executed on this thread since the last collective. Collectives do it themselves; call it
    /// once when the rank's work ends so the computation after its last collective is counted too.
    /// </summary>
    public void Flush()
    {
        double now = ComputeMeter.Flops;
        trace.Compute(now - metered);
        metered = now;
    }

    int Issue(CollectiveKind kind, long bytes, int destination = -1, int source = -1)
    {
        Flush();
        return trace.Issue(kind, bytes, destination, source);
    }

    T Blocking<T>(CollectiveKind kind, long bytes, Func<T> run, int destination = -1, int source = -1)
    {
        int handle = Issue(kind, bytes, destination, source);
        var result = run();
        trace.Wait(handle);
        return result;
    }

    ICommHandle Async(CollectiveKind kind, long bytes, ICommHandle handle, int destination = -1, int source = -1) =>
        new Handle(this, Issue(kind, bytes, destination, source), handle);

    public Tensor AllGather(Tensor input) => Blocking(CollectiveKind.AllGather, CommArgs.Bytes(input), () => inner.AllGather(input));

    public ICommHandle AllGatherAsync(Tensor input) => Async(CollectiveKind.AllGather, CommArgs.Bytes(input), inner.AllGatherAsync(input));

    public Tensor AllReduce(Tensor input, ReduceOp op = ReduceOp.Sum) =>
        Blocking(CollectiveKind.AllReduce, CommArgs.Bytes(input), () => inner.AllReduce(input, op));

    public Tensor ReduceScatter(Tensor input) =>
        Blocking(CollectiveKind.ReduceScatter, CommArgs.Bytes(input) / WorldSize, () => inner.ReduceScatter(input));

    public ICommHandle ReduceScatterAsync(Tensor input) =>
        Async(CollectiveKind.ReduceScatter, CommArgs.Bytes(input) / WorldSize, inner.ReduceScatterAsync(input));

    public Tensor AllToAll(Tensor input, int splitDim, int concatDim) =>
        Blocking(CollectiveKind.AllToAll, CommArgs.Bytes(input), () => inner.AllToAll(input, splitDim, concatDim));

    public Tensor Broadcast(Tensor input, int root) => Blocking(CollectiveKind.Broadcast, CommArgs.Bytes(input), () => inner.Broadcast(input, root));

    public void Send(Tensor input, int destination) =>
        Blocking(CollectiveKind.Send, CommArgs.Bytes(input), () => { inner.Send(input, destination); return 0; }, destination: destination);

    public Tensor Recv(long[] shape, ScalarType dtype, int source)
    {
        long bytes = shape.Aggregate(1L, (n, extent) => n * extent) * empty(0, dtype: dtype).ElementSize;
        return Blocking(CollectiveKind.Recv, bytes, () => inner.Recv(shape, dtype, source), source: source);
    }

    public Tensor SendRecv(Tensor input, int destination, int source) =>
        Blocking(CollectiveKind.SendRecv, CommArgs.Bytes(input), () => inner.SendRecv(input, destination, source), destination, source);

    public ICommHandle SendRecvAsync(Tensor input, int destination, int source) =>
        Async(CollectiveKind.SendRecv, CommArgs.Bytes(input), inner.SendRecvAsync(input, destination, source), destination, source);

    public void Barrier() => Blocking(CollectiveKind.Barrier, 0, () => { inner.Barrier(); return 0; });

    public IProcessGroup Split(int color, int key) =>
        throw new NotSupportedException("the simulated network models the world group only; Split is not simulated.");

    /// <summary>Does nothing: the inner group belongs to whoever created it.</summary>
    public void Dispose() { }

    /// <summary>Records the wait (once) when the method waits, then waits for real.</summary>
    sealed class Handle(SimulatedProcessGroup group, int id, ICommHandle inner) : ICommHandle
    {
        bool waited;

        public bool IsCompleted => inner.IsCompleted;

        public Tensor Wait()
        {
            if (!waited)
            {
                group.Flush();
                group.trace.Wait(id);
                waited = true;
            }
            return inner.Wait();
        }
    }
}
