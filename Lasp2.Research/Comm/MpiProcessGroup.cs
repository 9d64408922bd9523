using System.Diagnostics;
using Lasp2.Research.Comm.Mpi;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>
/// A process group over an MPI communicator (Open MPI or the MPICH family, see <see cref="MpiNative"/>): one
/// rank per process, one machine or many. Get the world with <see cref="ProcessGroups.FromMpi"/>.
/// Blocking collectives are zero-copy for contiguous CPU tensors: MPI reads the input's storage and writes
/// straight into the result. Transfers above <see cref="MaxCount"/> (2^31-1) elements per rank are split into
/// pieces. Asynchronous forms copy their input first (so it may be reused at once, as in-process) and are MPI
/// nonblocking operations completed in Wait. Send is eager like in-process: the message is copied and sent
/// in the background (MPI_Isend), so a ring of Sends followed by Recvs cannot deadlock.
/// Before each collective the ranks check they agree on call, arguments, dtype and shape (see
/// <see cref="MpiAgreement"/>). A call that outlives <see cref="Timeout"/> aborts the job with its name.
/// Bytes are counted by <see cref="CommVolume"/>, exactly as in-process. Threading: see <see cref="MpiRuntime"/>.
/// Non-CPU tensors are staged through host memory (CUDA-aware MPI is not assumed).
/// </summary>
public sealed unsafe partial class MpiProcessGroup : IProcessGroup
{
    const int Tag = 0;

    readonly MpiNative mpi;
    readonly bool isWorld;
    readonly List<(Tensor Copy, MpiRequests Requests)> sends = new();
    nint comm;
    long calls, messages;
    bool disposed;

    internal MpiProcessGroup(MpiNative mpi, nint comm, bool isWorld, TimeSpan timeout, bool checkAgreement)
    {
        this.mpi = mpi;
        this.comm = comm;
        this.isWorld = isWorld;
        Timeout = timeout;
        CheckAgreement = checkAgreement;
        int rank, size;
        lock (MpiRuntime.CallGate)
        {
            MpiNative.Check(mpi.CommRank(comm, &rank), "MPI_Comm_rank");
            MpiNative.Check(mpi.CommSize(comm, &size), "MPI_Comm_size");
        }
        (Rank, WorldSize) = (rank, size);
    }

    /// <summary>Largest element count of one MPI call (2^31-1; LASP2_MPI_MAX_COUNT lowers it to test the splitting).</summary>
    public static long MaxCount { get; } =
        long.TryParse(Environment.GetEnvironmentVariable("LASP2_MPI_MAX_COUNT"), out long max) && max is >= 1 and <= int.MaxValue
            ? max : int.MaxValue;

    public int Rank { get; }
    public int WorldSize { get; }
    public CommStats Stats { get; } = new();

    /// <summary>How long one call may take before the job is aborted with the call's name.</summary>
    public TimeSpan Timeout { get; }

    /// <summary>Whether collectives first check that every rank agrees on call, arguments, dtype and shape.</summary>
    public bool CheckAgreement { get; }

    /// <summary>"Open MPI v4.1.4, ...": the library's version string.</summary>
    public string LibraryVersion => mpi.Version();

    /// <summary>The thread level MPI_Init_thread provided (3 = MPI_THREAD_MULTIPLE).</summary>
    public static int ThreadLevel => MpiRuntime.ProvidedThreadLevel;

    /// <summary>Prints <paramref name="message"/> and aborts every rank of the job (MPI_Abort); does not return.</summary>
    public static void Abort(string message, int code = 1) => MpiRuntime.Abort(message, code);

    public Tensor AllGather(Tensor input)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.Input(input);
        using var scope = NewDisposeScope();
        string name = Begin(CommKind.AllGather, "", input, nonblocking: false).Name;
        var x = Host(input);
        var result = empty([WorldSize, .. input.shape], dtype: input.dtype);
        long n = input.NumberOfElements;
        nint type = MpiRuntime.ElementType(mpi, input.ElementSize);
        Blocking(name, () => Blocks(x, result, n, (send, receive, count) =>
            Call(mpi.Allgather(send, count, type, receive, count, type, comm), "MPI_Allgather")));
        Record(CommKind.AllGather, CommVolume.AllGather(WorldSize, CommArgs.Bytes(input)), started);
        return OnDevice(result, input.device).MoveToOuterDisposeScope();
    }

    public Tensor AllReduce(Tensor input, ReduceOp op = ReduceOp.Sum)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.Input(input);
        using var scope = NewDisposeScope();
        var (type, mpiOp) = MpiRuntime.Reduction(mpi, input.dtype, op);
        string name = Begin(CommKind.AllReduce, $"op={op}", input, nonblocking: false).Name;
        var x = Host(input);
        var result = empty_like(x);
        long size = input.ElementSize;
        Blocking(name, () =>
        {
            foreach (var (offset, count) in Pieces(input.NumberOfElements))
                Call(mpi.Allreduce(Address(x) + offset * size, Address(result) + offset * size, count, type, mpiOp, comm), "MPI_Allreduce");
        });
        Record(CommKind.AllReduce, CommVolume.AllReduce(WorldSize, CommArgs.Bytes(input)), started);
        return OnDevice(result, input.device).MoveToOuterDisposeScope();
    }

    public Tensor ReduceScatter(Tensor input)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.ReduceScatterInput(input, WorldSize);
        using var scope = NewDisposeScope();
        var (type, op) = MpiRuntime.Reduction(mpi, input.dtype, ReduceOp.Sum);
        string name = Begin(CommKind.ReduceScatter, "", input, nonblocking: false).Name;
        var x = Host(input);
        var result = empty(input.shape[1..], dtype: input.dtype);
        long n = result.NumberOfElements, size = input.ElementSize;
        Blocking(name, () =>
        {
            foreach (var (offset, count) in Pieces(n))
            {
                var send = count == n ? x : x.view(WorldSize, n).narrow(1, offset, count).contiguous();
                Call(mpi.ReduceScatterBlock(Address(send), Address(result) + offset * size, count, type, op, comm),
                    "MPI_Reduce_scatter_block");
            }
        });
        Record(CommKind.ReduceScatter, CommVolume.ReduceScatter(WorldSize, CommArgs.Bytes(input)), started);
        return OnDevice(result, input.device).MoveToOuterDisposeScope();
    }

    public Tensor AllToAll(Tensor input, int splitDim, int concatDim)
    {
        long started = Stopwatch.GetTimestamp();
        var (split, concat) = CommArgs.AllToAllDims(input, splitDim, concatDim, WorldSize);
        using var scope = NewDisposeScope();
        string name = Begin(CommKind.AllToAll, $"splitDim={split},concatDim={concat}", input, nonblocking: false).Name;
        // Block j (for rank j) must be contiguous: bring the split dimension to the front.
        var x = Host(input).transpose(0, split).contiguous();              // [W*b, ...]
        var received = empty_like(x);
        long m = x.NumberOfElements / WorldSize;
        nint type = MpiRuntime.ElementType(mpi, input.ElementSize);
        Blocking(name, () => Blocks(x, received, m, (send, receive, count) =>
            Call(mpi.Alltoall(send, count, type, receive, count, type, comm), "MPI_Alltoall")));
        var blocks = received.chunk(WorldSize, 0).Select(block => block.transpose(0, split)).ToArray();
        var result = cat(blocks, concat);
        Record(CommKind.AllToAll, CommVolume.AllToAll(WorldSize, CommArgs.Bytes(input)), started);
        return OnDevice(result, input.device).MoveToOuterDisposeScope();
    }

    public Tensor Broadcast(Tensor input, int root)
    {
        long started = Stopwatch.GetTimestamp();
        CommArgs.Input(input);
        CommArgs.Peer(root, WorldSize, nameof(root));
        using var scope = NewDisposeScope();
        string name = Begin(CommKind.Broadcast, $"root={root}", input, nonblocking: false).Name;
        var result = Rank == root ? Host(input).clone() : empty(input.shape, dtype: input.dtype);
        long size = input.ElementSize;
        nint type = MpiRuntime.ElementType(mpi, size);
        Blocking(name, () =>
        {
            foreach (var (offset, count) in Pieces(input.NumberOfElements))
                Call(mpi.Bcast(Address(result) + offset * size, count, type, root, comm), "MPI_Bcast");
        });
        Record(CommKind.Broadcast, CommVolume.Broadcast(WorldSize, Rank, root, CommArgs.Bytes(input)), started);
        return OnDevice(result, input.device).MoveToOuterDisposeScope();
    }

    public void Barrier()
    {
        long started = Stopwatch.GetTimestamp();
        string name = Begin(CommKind.Barrier, "", null, nonblocking: false).Name;
        Blocking(name, () => Call(mpi.Barrier(comm), "MPI_Barrier"));
        Record(CommKind.Barrier, new CommBytes(0, 0), started);
    }

    /// <summary>MPI_Comm_split; not recorded in <see cref="Stats"/> (set-up, not traffic). Dispose the sub-group when done.</summary>
    public IProcessGroup Split(int color, int key)
    {
        CommArgs.Color(color);
        ThrowIfDisposed();
        var sub = new nint[1];
        Blocking($"Split #{calls++}", () =>
        {
            fixed (nint* handle = sub) Call(mpi.CommSplit(comm, color, key, handle), "MPI_Comm_split");
        });
        return new MpiProcessGroup(mpi, sub[0], isWorld: false, Timeout, CheckAgreement);
    }

    /// <summary>Completes pending sends; frees a sub-group's communicator; the world group finalizes MPI.</summary>
    public void Dispose()
    {
        if (disposed) return;
        CompleteSends(all: true);
        if (isWorld) MpiRuntime.FinalizeMpi();
        else
            lock (MpiRuntime.CallGate)
                fixed (nint* handle = &comm)
                    Call(mpi.CommFree(handle), "MPI_Comm_free");
        disposed = true;
    }

    /// <summary>Numbers the call, checks the group is usable and (if on) starts the cross-rank agreement check.</summary>
    (string Name, MpiAgreement? Check) Begin(string kind, string arguments, Tensor? input, bool nonblocking)
    {
        ThrowIfDisposed();
        string name = $"{kind} #{calls++}{(isWorld ? "" : $" in a sub-group of {WorldSize} ranks")}";
        if (!CheckAgreement) return (name, null);
        var check = MpiRuntime.Watched(name, Timeout, () => MpiAgreement.Start(mpi, comm, WorldSize, name, kind, arguments,
            input?.dtype ?? ScalarType.Float32, input?.shape ?? [], nonblocking));
        if (!nonblocking) check.Verify();
        return (name, check);
    }

    /// <summary>Runs MPI calls under the watchdog and the call lock.</summary>
    void Blocking(string name, Action calls) =>
        MpiRuntime.Watched(name, Timeout, () =>
        {
            lock (MpiRuntime.CallGate) calls();
            return 0;
        });

    void Record(string kind, CommBytes bytes, long started) =>
        Stats.Record(kind, bytes.Sent, bytes.Received, Stopwatch.GetElapsedTime(started));

    /// <summary>One block collective call: send buffer, receive buffer, elements per block.</summary>
    delegate void BlockCall(byte* send, byte* receive, int count);

    /// <summary>
    /// A block collective (Allgather, Alltoall) in pieces: <paramref name="send"/> holds 1 or W blocks and
    /// <paramref name="receive"/> W blocks of <paramref name="blockElements"/> each. One piece goes straight
    /// between the tensors; a split transfer stages each piece's columns through contiguous buffers.
    /// </summary>
    void Blocks(Tensor send, Tensor receive, long blockElements, BlockCall call)
    {
        foreach (var (offset, count) in Pieces(blockElements))
        {
            if (count == blockElements)
            {
                call(Address(send), Address(receive), count);
                continue;
            }
            var sendPiece = send.view(-1, blockElements).narrow(1, offset, count).contiguous();
            var stage = empty([WorldSize, count], dtype: receive.dtype);
            call(Address(sendPiece), Address(stage), count);
            receive.view(WorldSize, blockElements).narrow(1, offset, count).copy_(stage);
        }
    }

    /// <summary>(offset, count) pieces of at most <see cref="MaxCount"/> elements; one empty piece for an empty tensor.</summary>
    static IEnumerable<(long Offset, int Count)> Pieces(long elements)
    {
        long offset = 0;
        do
        {
            int count = (int)Math.Min(MaxCount, elements - offset);
            yield return (offset, count);
            offset += count;
        } while (offset < elements);
    }

    /// <summary>A contiguous CPU tensor with the data of <paramref name="input"/>: the input itself (no copy) when it already is one.</summary>
    static Tensor Host(Tensor input) => input.detach().cpu().contiguous();

    static Tensor OnDevice(Tensor result, Device device) => result.device_type == device.type ? result : result.to(device);

    /// <summary>Address of a contiguous CPU tensor's first element (native memory: it does not move).</summary>
    static byte* Address(Tensor tensor)
    {
        fixed (byte* data = tensor.bytes) return data;
    }

    static void Call(int code, string function) => MpiNative.Check(code, function);

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(disposed, this);
}
