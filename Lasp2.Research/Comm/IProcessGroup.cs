using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>Reduction applied by <see cref="IProcessGroup.AllReduce"/>.</summary>
public enum ReduceOp
{
    /// <summary>Elementwise sum over ranks.</summary>
    Sum,
    /// <summary>Elementwise maximum over ranks.</summary>
    Max,
}

/// <summary>An asynchronous collective in flight; <see cref="Wait"/> blocks until its result is ready.</summary>
public interface ICommHandle
{
    /// <summary>True once the result is ready (Wait will not block).</summary>
    bool IsCompleted { get; }

    /// <summary>Blocks until the collective finishes and returns its result (owned by this rank).</summary>
    Tensor Wait();
}

/// <summary>
/// A group of ranks that exchange TorchSharp tensors (the part of torch.distributed that sequence
/// parallelism needs). Every rank of the group must call the same collectives in the same order.
/// Inputs may be any shape; results are new tensors owned by the calling rank.
/// </summary>
public interface IProcessGroup : IDisposable
{
    /// <summary>This rank, 0..WorldSize-1.</summary>
    int Rank { get; }

    /// <summary>Number of ranks in the group.</summary>
    int WorldSize { get; }

    /// <summary>
    /// Calls, bytes and waiting time per collective kind, for this rank. Bytes follow the ring convention of
    /// <see cref="CommVolume"/> on every backend (e.g. AllGather of S bytes: (W-1) S sent and received).
    /// </summary>
    CommStats Stats { get; }

    /// <summary>Every rank's <paramref name="input"/> stacked in rank order: [...] -> [W, ...].</summary>
    Tensor AllGather(Tensor input);

    /// <summary>Asynchronous <see cref="AllGather"/>.</summary>
    ICommHandle AllGatherAsync(Tensor input);

    /// <summary>Elementwise reduction over ranks; every rank gets the result.</summary>
    Tensor AllReduce(Tensor input, ReduceOp op = ReduceOp.Sum);

    /// <summary>
    /// Adjoint of AllGather: <paramref name="input"/> [W, ...] holds one block per destination rank;
    /// rank r receives sum over ranks of input[r]: [W, ...] -> [...].
    /// </summary>
    Tensor ReduceScatter(Tensor input);

    /// <summary>Asynchronous <see cref="ReduceScatter"/>.</summary>
    ICommHandle ReduceScatterAsync(Tensor input);

    /// <summary>
    /// Splits <paramref name="input"/> into W equal blocks along <paramref name="splitDim"/>, sends block j
    /// to rank j, and concatenates the received blocks in rank order along <paramref name="concatDim"/>.
    /// </summary>
    Tensor AllToAll(Tensor input, int splitDim, int concatDim);

    /// <summary>Rank <paramref name="root"/>'s tensor on every rank (same shape and dtype everywhere).</summary>
    Tensor Broadcast(Tensor input, int root);

    /// <summary>Sends <paramref name="input"/> to <paramref name="destination"/> (blocking).</summary>
    void Send(Tensor input, int destination);

    /// <summary>Receives a tensor of the given shape and dtype from <paramref name="source"/> (blocking).</summary>
    Tensor Recv(long[] shape, ScalarType dtype, int source);

    /// <summary>
    /// Sends <paramref name="input"/> to <paramref name="destination"/> while receiving a tensor of the same
    /// shape and dtype from <paramref name="source"/> (one ring step).
    /// </summary>
    Tensor SendRecv(Tensor input, int destination, int source);

    /// <summary>Asynchronous <see cref="SendRecv"/>.</summary>
    ICommHandle SendRecvAsync(Tensor input, int destination, int source);

    /// <summary>Returns when every rank has arrived.</summary>
    void Barrier();

    /// <summary>
    /// Collective: ranks with the same <paramref name="color"/> form a sub-group, ordered by
    /// <paramref name="key"/> then by rank (MPI_Comm_split semantics).
    /// </summary>
    IProcessGroup Split(int color, int key);
}
