using Lasp2.Reference;
using System.Diagnostics;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>
/// One rank of an in-process group: ranks are threads of one process (see
/// <see cref="ProcessGroups.RunInProcess{T}"/>). Every call deposits a private copy of this rank's input
/// into a rendezvous shared with the other ranks, so the caller may reuse or change its input as soon
/// as the call returns (also for the asynchronous forms); every result is a new tensor owned by the
/// calling rank, created in its current dispose scope. Collectives are matched by call number within
/// the group; messages by their order on each (source, destination) channel, as in MPI. Sends are
/// eager (never block). Reductions fold ranks in rank order, so every rank gets bitwise the same sum.
/// Results are detached from autograd. Bytes are counted by <see cref="CommVolume"/> (ring convention).
/// </summary>
public sealed class InProcessGroup : IProcessGroup
{
    readonly InProcessWorld world;
    readonly long groupId;
    readonly int[] members;
    readonly long[] sent;
    readonly long[] received;
    long calls;
    bool disposed;

    internal InProcessGroup(InProcessWorld world, long groupId, int[] members, int rank)
    {
        this.world = world;
        this.groupId = groupId;
        this.members = members;
        Rank = rank;
        sent = new long[members.Length];
        received = new long[members.Length];
    }

    public int Rank { get; }
    public int WorldSize => members.Length;
    public CommStats Stats { get; } = new();

    /// <summary>How long a collective waits for the other ranks before it fails with <see cref="CommTimeoutException"/>.</summary>
    public TimeSpan Timeout => world.Timeout;

    /// <summary>World ranks of this group's members, in group rank order.</summary>
    public IReadOnlyList<int> WorldRanks => members;

    public Tensor AllGather(Tensor input) => StartAllGather(input).Finish(Stopwatch.GetTimestamp());

    public ICommHandle AllGatherAsync(Tensor input) => StartAllGather(input);

    public Tensor AllReduce(Tensor input, ReduceOp op = ReduceOp.Sum)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.Input(input);
        var (key, slot) = Post(CommKind.AllReduce, input, $"op={op}");
        var reduce = new PendingCollective(CommKind.AllReduce, CommVolume.AllReduce(WorldSize, CommArgs.Bytes(input)), Stats,
            () => slot.Done.IsSet, () => Complete(key, slot, parts => Owned(() => Fold(parts, op, input.device, p => p))));
        return reduce.Finish(started);
    }

    public Tensor ReduceScatter(Tensor input) => StartReduceScatter(input).Finish(Stopwatch.GetTimestamp());

    public ICommHandle ReduceScatterAsync(Tensor input) => StartReduceScatter(input);

    public Tensor AllToAll(Tensor input, int splitDim, int concatDim)
    {
        long started = Stopwatch.GetTimestamp();
        var (split, concat) = CommArgs.AllToAllDims(input, splitDim, concatDim, WorldSize);
        long block = input.shape[split] / WorldSize;
        var (key, slot) = Post(CommKind.AllToAll, input, $"splitDim={split},concatDim={concat}");
        var exchange = new PendingCollective(CommKind.AllToAll, CommVolume.AllToAll(WorldSize, CommArgs.Bytes(input)), Stats,
            () => slot.Done.IsSet,
            () => Complete(key, slot, parts => Owned(() =>
                cat(parts.Select(p => p.Data!.narrow(split, Rank * block, block).to(input.device)).ToArray(), concat))));
        return exchange.Finish(started);
    }

    public Tensor Broadcast(Tensor input, int root)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.Input(input);
        CommArgs.Peer(root, WorldSize, nameof(root));
        var (key, slot) = Post(CommKind.Broadcast, input, $"root={root}", copy: Rank == root);
        var broadcast = new PendingCollective(CommKind.Broadcast,
            CommVolume.Broadcast(WorldSize, Rank, root, CommArgs.Bytes(input)), Stats,
            () => slot.Done.IsSet, () => Complete(key, slot, parts => Owned(() => parts[root].Data!.to(input.device).clone())));
        return broadcast.Finish(started);
    }

    public void Send(Tensor input, int destination)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.Input(input);
        CommArgs.Peer(destination, WorldSize, nameof(destination));
        PostMessage(input, destination);
        var bytes = CommVolume.Send(Rank, destination, CommArgs.Bytes(input));
        Stats.Record(CommKind.Send, bytes.Sent, bytes.Received, Stopwatch.GetElapsedTime(started));
    }

    public Tensor Recv(long[] shape, ScalarType dtype, int source)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.Shape(shape);
        CommArgs.Peer(source, WorldSize, nameof(source));
        long bytes = shape.Aggregate(1L, (n, extent) => n * extent) * empty(0, dtype: dtype).ElementSize;
        return StartRecv(CommKind.Recv, shape, dtype, source, CommVolume.Recv(Rank, source, bytes)).Finish(started);
    }

    public Tensor SendRecv(Tensor input, int destination, int source) =>
        StartSendRecv(input, destination, source).Finish(Stopwatch.GetTimestamp());

    public ICommHandle SendRecvAsync(Tensor input, int destination, int source) => StartSendRecv(input, destination, source);

    public void Barrier()
    {
        long started = Stopwatch.GetTimestamp();
        var (key, slot) = Post(CommKind.Barrier, null, "");
        Complete(key, slot, _ => 0);
        Stats.Record(CommKind.Barrier, 0, 0, Stopwatch.GetElapsedTime(started));
    }

    /// <summary>MPI_Comm_split: a collective; not recorded in <see cref="Stats"/> (set-up, not traffic).</summary>
    public IProcessGroup Split(int color, int key)
    {
        CommArgs.Color(color);
        var (slotKey, slot) = Post("Split", null, "", color: color, key: key);
        return Complete(slotKey, slot, parts =>
        {
            var mine = Enumerable.Range(0, WorldSize).Where(i => parts[i].Color == color)
                .OrderBy(i => parts[i].Key).ThenBy(i => i).ToArray();
            return new InProcessGroup(world, world.SharedGroupId(slot, color), mine.Select(i => members[i]).ToArray(),
                Array.IndexOf(mine, Rank));
        });
    }

    /// <summary>Marks the group unusable; pending rendezvous of other ranks are unaffected.</summary>
    public void Dispose() => disposed = true;

    PendingCollective StartAllGather(Tensor input)
    {
        CommArgs.Input(input);
        var (key, slot) = Post(CommKind.AllGather, input, "");
        return new PendingCollective(CommKind.AllGather, CommVolume.AllGather(WorldSize, CommArgs.Bytes(input)), Stats,
            () => slot.Done.IsSet,
            () => Complete(key, slot, parts => Owned(() => stack(parts.Select(p => p.Data!.to(input.device)).ToArray()))));
    }

    PendingCollective StartReduceScatter(Tensor input)
    {
        CommArgs.ReduceScatterInput(input, WorldSize);
        var (key, slot) = Post(CommKind.ReduceScatter, input, "");
        return new PendingCollective(CommKind.ReduceScatter, CommVolume.ReduceScatter(WorldSize, CommArgs.Bytes(input)), Stats,
            () => slot.Done.IsSet,
            () => Complete(key, slot, parts => Owned(() => Fold(parts, ReduceOp.Sum, input.device, p => p[Rank]))));
    }

    PendingCollective StartSendRecv(Tensor input, int destination, int source)
    {
        CommArgs.Input(input);
        CommArgs.Peer(destination, WorldSize, nameof(destination));
        CommArgs.Peer(source, WorldSize, nameof(source));
        PostMessage(input, destination);
        return StartRecv(CommKind.SendRecv, input.shape, input.dtype, source,
            CommVolume.SendRecv(Rank, destination, source, CommArgs.Bytes(input)));
    }

    PendingCollective StartRecv(string kind, long[] shape, ScalarType dtype, int source, CommBytes bytes)
    {
        var key = new SlotKey(groupId, received[source]++, source, Rank);
        var slot = world.Reserve(key, MessageName(key), [members[source]], consumers: 1);
        return new PendingCollective(kind, bytes, Stats, () => slot.Done.IsSet, () =>
        {
            var message = world.Await(slot)[0];
            try
            {
                if (message.Dtype != dtype || !message.Shape.SequenceEqual(shape))
                    throw new CommException(
                        $"{slot.Name}: rank {source} sent {CommArgs.Describe(message.Dtype, message.Shape)} but rank {Rank} " +
                        $"expects {CommArgs.Describe(dtype, shape)}.");
                // The message is a private copy nobody else reads: hand its storage over without copying.
                return message.Data!.detach();
            }
            finally
            {
                world.Consume(key, slot);
            }
        });
    }

    void PostMessage(Tensor input, int destination)
    {
        ThrowIfDisposed();
        var key = new SlotKey(groupId, sent[destination]++, Rank, destination);
        world.Arrive(key, MessageName(key), [members[Rank]], consumers: 1, index: 0,
            new Contribution(CommKind.Send, "", input.shape, input.dtype, PrivateCopy(input)));
    }

    (SlotKey Key, Slot Slot) Post(string kind, Tensor? input, string arguments, bool copy = true, int color = 0, int key = 0)
    {
        ThrowIfDisposed();
        var slotKey = new SlotKey(groupId, calls++, -1, -1);
        var part = new Contribution(kind, arguments, input?.shape ?? [], input?.dtype ?? ScalarType.Float32,
            copy && input is not null ? PrivateCopy(input) : null, color, key);
        return (slotKey, world.Arrive(slotKey, $"{kind} #{slotKey.Sequence}{GroupName}", members, members.Length, Rank, part));
    }

    /// <summary>Waits for every part, checks the ranks agree, builds this rank's result, then releases the rendezvous.</summary>
    T Complete<T>(SlotKey key, Slot slot, Func<Contribution[], T> build)
    {
        var parts = world.Await(slot);
        CheckAgreement(slot.Name, parts);
        try
        {
            return build(parts);
        }
        finally
        {
            world.Consume(key, slot);
        }
    }

    /// <summary>Every rank must have made the same call with the same arguments, shape and dtype.</summary>
    void CheckAgreement(string name, Contribution[] parts)
    {
        Disagree(name, parts, p => p.Kind, "which collective was called (every rank must call the same collectives in the same order)");
        Disagree(name, parts, p => p.Arguments, "the arguments");
        Disagree(name, parts, p => CommArgs.Describe(p.Dtype, p.Shape), "dtype and shape (every rank must pass the same)");
    }

    void Disagree(string name, Contribution[] parts, Func<Contribution, string> property, string what)
    {
        if (parts.All(p => property(p) == property(parts[0]))) return;
        var each = parts.Select((p, rank) => $"rank {rank}: {property(p)}");
        throw new CommException($"{name}: ranks disagree on {what}: {string.Join("; ", each)}.");
    }

    /// <summary>Reduction over ranks in rank order: part_0 op part_1 op ... (the same order on every rank).</summary>
    static Tensor Fold(Contribution[] parts, ReduceOp op, Device device, Func<Tensor, Tensor> block)
    {
        var total = block(parts[0].Data!).to(device).clone();
        foreach (var part in parts.Skip(1))
        {
            var term = block(part.Data!).to(device);
            total = op == ReduceOp.Sum ? total.PlusInPlace(term) : total.maximum(term);
        }
        return total;
    }

    /// <summary>Runs <paramref name="make"/> in its own dispose scope and keeps only the result.</summary>
    static Tensor Owned(Func<Tensor> make)
    {
        using var scope = NewDisposeScope();
        return make().MoveToOuterDisposeScope();
    }

    /// <summary>A copy of <paramref name="input"/> owned by the rendezvous, outside every dispose scope.</summary>
    static Tensor PrivateCopy(Tensor input)
    {
        using var scope = NewDisposeScope();
        return input.detach().clone().DetachFromDisposeScope();
    }

    string MessageName(SlotKey key) =>
        $"message #{key.Sequence} from rank {key.Source} to rank {key.Destination}{GroupName}";

    string GroupName => members.Length == world.WorldSize && members.SequenceEqual(Enumerable.Range(0, world.WorldSize))
        ? "" : $" in group of world ranks [{InProcessWorld.RankList(members)}]";

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(disposed, this);
}
