using System.Diagnostics;
using Lasp2.Research.Comm.Mpi;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>Point-to-point and asynchronous forms of <see cref="MpiProcessGroup"/>.</summary>
public sealed unsafe partial class MpiProcessGroup
{
    public void Send(Tensor input, int destination)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.Input(input);
        CommArgs.Peer(destination, WorldSize, nameof(destination));
        ThrowIfDisposed();
        CompleteSends(all: false);
        var copy = Private(() => Host(input).clone());
        var requests = Post(Pieces(copy.NumberOfElements), copy.ElementSize, (offset, count, type, request) =>
            mpi.Isend(Address(copy) + offset, count, type, destination, Tag, comm, request), "MPI_Isend");
        sends.Add((copy, requests));
        Record(CommKind.Send, CommVolume.Send(Rank, destination, CommArgs.Bytes(input)), started);
    }

    public Tensor Recv(long[] shape, ScalarType dtype, int source)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.Shape(shape);
        CommArgs.Peer(source, WorldSize, nameof(source));
        ThrowIfDisposed();
        using var scope = NewDisposeScope();
        var result = empty(shape, dtype: dtype);
        string name = $"Recv #{messages++} from rank {source}";
        long size = result.ElementSize;
        nint type = MpiRuntime.ElementType(mpi, size);
        var status = GC.AllocateArray<byte>(MpiNative.StatusBytes, pinned: true);
        Blocking(name, () =>
        {
            foreach (var (offset, count) in Pieces(result.NumberOfElements))
            {
                Call(mpi.Recv(Address(result) + offset * size, count, type, source, Tag, comm, Address(status)), "MPI_Recv");
                CheckCount(name, status, type, count, source);
            }
        });
        Record(CommKind.Recv, CommVolume.Recv(Rank, source, CommArgs.Bytes(result)), started);
        return result.MoveToOuterDisposeScope();
    }

    public Tensor SendRecv(Tensor input, int destination, int source)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.Input(input);
        CommArgs.Peer(destination, WorldSize, nameof(destination));
        CommArgs.Peer(source, WorldSize, nameof(source));
        ThrowIfDisposed();
        using var scope = NewDisposeScope();
        var x = Host(input);
        var result = empty_like(x);
        string name = $"SendRecv #{messages++} to rank {destination} from rank {source}";
        long size = input.ElementSize;
        nint type = MpiRuntime.ElementType(mpi, size);
        var status = GC.AllocateArray<byte>(MpiNative.StatusBytes, pinned: true);
        Blocking(name, () =>
        {
            foreach (var (offset, count) in Pieces(input.NumberOfElements))
            {
                Call(mpi.Sendrecv(Address(x) + offset * size, count, type, destination, Tag,
                    Address(result) + offset * size, count, type, source, Tag, comm, Address(status)), "MPI_Sendrecv");
                CheckCount(name, status, type, count, source);
            }
        });
        Record(CommKind.SendRecv, CommVolume.SendRecv(Rank, destination, source, CommArgs.Bytes(input)), started);
        return OnDevice(result, input.device).MoveToOuterDisposeScope();
    }

    public ICommHandle SendRecvAsync(Tensor input, int destination, int source)
    {
        CommArgs.Input(input);
        CommArgs.Peer(destination, WorldSize, nameof(destination));
        CommArgs.Peer(source, WorldSize, nameof(source));
        ThrowIfDisposed();
        string name = $"SendRecvAsync #{messages++} to rank {destination} from rank {source}";
        var copy = Private(() => Host(input).clone());
        var result = Private(() => empty_like(copy));
        long size = input.ElementSize;
        var pieces = Pieces(input.NumberOfElements).ToArray();
        // Receives first, so a message to this rank itself finds its receive posted.
        var receives = Post(pieces, size, (offset, count, type, request) =>
            mpi.Irecv(Address(result) + offset, count, type, source, Tag, comm, request), "MPI_Irecv");
        var sent = Post(pieces, size, (offset, count, type, request) =>
            mpi.Isend(Address(copy) + offset, count, type, destination, Tag, comm, request), "MPI_Isend");
        nint elementType = MpiRuntime.ElementType(mpi, size);
        return Pending(CommKind.SendRecv, CommVolume.SendRecv(Rank, destination, source, CommArgs.Bytes(input)), name,
            check: null, [receives, sent], [copy], result, input.device,
            () =>
            {
                for (int i = 0; i < pieces.Length; i++) CheckCount(name, receives.Statuses[i], elementType, pieces[i].Count, source);
            });
    }

    public ICommHandle AllGatherAsync(Tensor input)
    {
        CommArgs.Input(input);
        long n = input.NumberOfElements, size = input.ElementSize;
        if (n > MaxCount) return Deferred(input, AllGather);
        var (name, check) = Begin(CommKind.AllGather, "", input, nonblocking: true);
        var copy = Private(() => Host(input).clone());
        var result = Private(() => empty([WorldSize, .. input.shape], dtype: input.dtype));
        var requests = Post([(0, (int)n)], size, (_, count, type, request) =>
            mpi.Iallgather(Address(copy), count, type, Address(result), count, type, comm, request), "MPI_Iallgather");
        return Pending(CommKind.AllGather, CommVolume.AllGather(WorldSize, CommArgs.Bytes(input)), name, check,
            [requests], [copy], result, input.device, null);
    }

    public ICommHandle ReduceScatterAsync(Tensor input)
    {
        CommArgs.ReduceScatterInput(input, WorldSize);
        var (type, op) = MpiRuntime.Reduction(mpi, input.dtype, ReduceOp.Sum);
        long n = input.NumberOfElements / WorldSize;
        if (n > MaxCount) return Deferred(input, ReduceScatter);
        var (name, check) = Begin(CommKind.ReduceScatter, "", input, nonblocking: true);
        var copy = Private(() => Host(input).clone());
        var result = Private(() => empty(input.shape[1..], dtype: input.dtype));
        var request = new MpiRequests(mpi, 1);
        lock (MpiRuntime.CallGate)
            Call(mpi.IreduceScatterBlock(Address(copy), Address(result), (int)n, type, op, comm, request.Slot(0)), "MPI_Ireduce_scatter_block");
        return Pending(CommKind.ReduceScatter, CommVolume.ReduceScatter(WorldSize, CommArgs.Bytes(input)), name, check,
            [request], [copy], result, input.device, null);
    }

    /// <summary>One nonblocking MPI call: byte offset, element count, element datatype, where to store the request.</summary>
    delegate int PostPiece(long offset, int count, nint type, nint* request);

    /// <summary>
    /// Posts one nonblocking call per piece and returns the requests. <paramref name="post"/> gets the byte offset,
    /// the element count, the element datatype and where to store the request.
    /// </summary>
    MpiRequests Post(IEnumerable<(long Offset, int Count)> pieces, long elementSize, PostPiece post, string function)
    {
        var list = pieces.ToArray();
        var requests = new MpiRequests(mpi, list.Length);
        nint type = MpiRuntime.ElementType(mpi, elementSize);
        lock (MpiRuntime.CallGate)
            for (int i = 0; i < list.Length; i++)
                Call(post(list[i].Offset * elementSize, list[i].Count, type, requests.Slot(i)), function);
        return requests;
    }

    /// <summary>
    /// The handle of a nonblocking operation: Wait verifies the agreement check, completes every request (under
    /// the watchdog), runs <paramref name="verify"/> on the statuses, frees the buffers and hands over the result.
    /// </summary>
    PendingCollective Pending(string kind, CommBytes bytes, string name, MpiAgreement? check, MpiRequests[] requests,
        Tensor[] buffers, Tensor result, Device device, Action? verify) =>
        new(kind, bytes, Stats,
            () => requests.All(r => r.TestAll()),
            () => MpiRuntime.Watched(name, Timeout, () =>
            {
                check?.Verify();
                foreach (var r in requests) r.WaitAll();
                verify?.Invoke();
                foreach (var buffer in buffers) buffer.Dispose();
                // A new handle in the waiting thread's dispose scope takes over the storage.
                var owned = OnDevice(result.detach(), device);
                result.Dispose();
                return owned;
            }));

    /// <summary>
    /// A transfer too large for one nonblocking call (more than 2^31-1 elements per rank) runs as the blocking,
    /// split form at Wait, on a copy taken now; that blocking call records itself in <see cref="Stats"/>.
    /// </summary>
    PendingCollective Deferred(Tensor input, Func<Tensor, Tensor> blocking)
    {
        var copy = Private(() => input.detach().clone());
        return new PendingCollective("deferred", new CommBytes(0, 0), new CommStats(), () => false, () =>
        {
            using var scope = NewDisposeScope();
            var result = blocking(copy).MoveToOuterDisposeScope();
            copy.Dispose();
            return result;
        });
    }

    /// <summary>Waits for (all) or reaps (the finished) eager sends, freeing their private copies.</summary>
    void CompleteSends(bool all)
    {
        for (int s = sends.Count - 1; s >= 0; s--)
        {
            var (copy, requests) = sends[s];
            if (all) requests.WaitAll();
            else if (!requests.TestAll()) continue;
            copy.Dispose();
            sends.RemoveAt(s);
        }
    }

    /// <summary>A received message must fill the whole buffer; MPI itself rejects one that is too long.</summary>
    void CheckCount(string name, byte[] status, nint type, int expected, int source)
    {
        int received;
        MpiNative.Check(mpi.GetCount(Address(status), type, &received), "MPI_Get_count");
        if (received != expected)
            throw new CommException(
                $"{name}: rank {source} sent {received} elements but rank {Rank} expects {expected}; the shapes or dtypes differ.");
    }

    /// <summary>Address of a buffer on the pinned-object heap.</summary>
    static byte* Address(byte[] pinned)
    {
        fixed (byte* data = pinned) return data;
    }

    /// <summary>A buffer owned by a nonblocking operation, outside every dispose scope, so MPI's memory outlives the caller's scope.</summary>
    static Tensor Private(Func<Tensor> make)
    {
        using var scope = NewDisposeScope();
        return make().DetachFromDisposeScope();
    }
}
